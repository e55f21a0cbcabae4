// A starter program per language for an empty (or untouched) editor: hello, reading stdin.

export const STARTERS = {
  python: `import sys

name = sys.stdin.readline().strip() or "world"
print(f"Hello, {name}!")
`,
  bash: `read -r name
echo "Hello, \${name:-world}!"
`,
  sh: `read -r name
echo "Hello, \${name:-world}!"
`,
  c: `#include <stdio.h>
#include <string.h>

int main(void) {
    char name[256];
    if (!fgets(name, sizeof name, stdin)) name[0] = '\\0';
    name[strcspn(name, "\\n")] = '\\0';
    printf("Hello, %s!\\n", name[0] ? name : "world");
    return 0;
}
`,
  cpp: `#include <iostream>
#include <string>

int main() {
    std::string name;
    if (!std::getline(std::cin, name) || name.empty()) name = "world";
    std::cout << "Hello, " << name << "!\\n";
}
`,
  java: `import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        String name = in.hasNextLine() ? in.nextLine().trim() : "";
        System.out.println("Hello, " + (name.isEmpty() ? "world" : name) + "!");
    }
}
`,
  javascript: `const input = require("fs").readFileSync(0, "utf8");
const name = input.split("\\n")[0].trim() || "world";
console.log(\`Hello, \${name}!\`);
`,
  go: `package main

import (
    "bufio"
    "fmt"
    "os"
    "strings"
)

func main() {
    line, _ := bufio.NewReader(os.Stdin).ReadString('\\n')
    name := strings.TrimSpace(line)
    if name == "" {
        name = "world"
    }
    fmt.Printf("Hello, %s!\\n", name)
}
`,
  rust: `use std::io;

fn main() {
    let mut line = String::new();
    io::stdin().read_line(&mut line).unwrap_or(0);
    let name = match line.trim() {
        "" => "world",
        name => name,
    };
    println!("Hello, {}!", name);
}
`,
  ruby: `name = ($stdin.gets || "").strip
name = "world" if name.empty?
puts "Hello, #{name}!"
`,
  perl: `use strict;
use warnings;

my $name = <STDIN> // "";
chomp $name;
$name = "world" if $name eq "";
print "Hello, $name!\\n";
`,
};
