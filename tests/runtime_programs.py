"""Small programs in every runtime, for tests/test_runtimes.py: hello (stdin), a non-zero exit,
a runtime error, a compile error, an endless loop, a memory hog, and a multi-file program."""
from __future__ import annotations

HELLO, EXIT3, CRASH, BROKEN, SPIN, HOG, MULTI = (
    "hello", "exit3", "crash", "broken", "spin", "hog", "multi")

PROGRAMS: dict[str, dict] = {
    "c": {
        HELLO: '#include <stdio.h>\nint main(void){char b[64];'
               ' if(fgets(b,64,stdin)) printf("hello %s", b); return 0;}\n',
        EXIT3: "int main(void){return 3;}\n",
        CRASH: "int main(void){volatile int *p = 0; return *p;}\n",
        BROKEN: "int main(void){ return undefined_thing; }\n",
        SPIN: "int main(void){for(;;){} }\n",
        HOG: '#include <stdlib.h>\n#include <string.h>\n'
             "int main(void){for(;;){char *p = malloc(1<<20); memset(p, 1, 1<<20);}}\n",
        MULTI: [("main.c", ('#include <stdio.h>\n#include "util.h"\n'
                           'int main(void){printf("hello %d\\n", twice(21)); return 0;}\n')),
                ("util.h", "int twice(int);\n"),
                ("util.c", '#include "util.h"\nint twice(int x){return 2*x;}\n')],
    },
    "cpp": {
        HELLO: "#include <iostream>\n#include <string>\nint main(){std::string s;"
               ' std::getline(std::cin, s); std::cout << "hello " << s << "\\n";}\n',
        EXIT3: "int main(){return 3;}\n",
        CRASH: '#include <stdexcept>\nint main(){throw std::runtime_error("boom");}\n',
        BROKEN: "int main(){ std::vector<int> v; }\n",
        SPIN: "int main(){for(;;){}}\n",
        HOG: "#include <vector>\nint main(){std::vector<std::vector<char>> v;"
             " for(;;) v.emplace_back(1<<20, 1);}\n",
        MULTI: [("main.cpp", ('#include <iostream>\n#include "util.hpp"\n'
                             'int main(){std::cout << "hello " << twice(21) << "\\n";}\n')),
                ("util.hpp", "int twice(int);\n"),
                ("util.cpp", '#include "util.hpp"\nint twice(int x){return 2*x;}\n')],
    },
    "java": {
        HELLO: "import java.util.Scanner;\npublic class Hello { public static void main(String[] a)"
               ' { System.out.println("hello " + new Scanner(System.in).nextLine()); } }\n',
        EXIT3: "public class Main { public static void main(String[] a) { System.exit(3); } }\n",
        CRASH: "public class Main { public static void main(String[] a) {"
               ' throw new IllegalStateException("boom"); } }\n',
        BROKEN: "public class Main { public static void main(String[] a) { int x = ; } }\n",
        SPIN: "public class Main { public static void main(String[] a) { while (true) {} } }\n",
        HOG: "import java.util.*;\npublic class Main { public static void main(String[] a) {"
             " List<byte[]> l = new ArrayList<>(); while (true) l.add(new byte[1 << 20]); } }\n",
        MULTI: [("Main.java", ("public class Main { public static void main(String[] a) {"
                              ' System.out.println("hello " + Util.twice(21)); } }\n')),
                ("Util.java", "class Util { static int twice(int x) { return 2 * x; } }\n")],
    },
    "javascript": {
        HELLO: 'const s = require("fs").readFileSync(0, "utf8");'
               ' console.log("hello " + s.trim());\n',
        EXIT3: "process.exit(3);\n",
        CRASH: 'throw new Error("boom");\n',
        SPIN: "for (;;) {}\n",
        HOG: "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));\n",
        MULTI: [("main.js", 'const u = require("./util"); console.log("hello " + u.twice(21));\n'),
                ("util.js", "exports.twice = (x) => 2 * x;\n")],
    },
    "go": {
        HELLO: 'package main\nimport ("bufio"; "fmt"; "os")\nfunc main() {'
               ' s, _ := bufio.NewReader(os.Stdin).ReadString(10); fmt.Print("hello ", s) }\n',
        EXIT3: 'package main\nimport "os"\nfunc main() { os.Exit(3) }\n',
        CRASH: 'package main\nfunc main() { panic("boom") }\n',
        BROKEN: "package main\nfunc main() { x := }\n",
        SPIN: "package main\nfunc main() { for {} }\n",
        HOG: "package main\nfunc main() { var s [][]byte; for { b := make([]byte, 1<<20);"
             " for i := range b { b[i] = 1 }; s = append(s, b) } }\n",
        MULTI: [("main.go", ('package main\nimport "fmt"\n'
                            'func main() { fmt.Println("hello", twice(21)) }\n')),
                ("util.go", "package main\nfunc twice(x int) int { return 2 * x }\n")],
    },
    "rust": {
        HELLO: "use std::io::Read;\nfn main() { let mut s = String::new();"
               ' std::io::stdin().read_to_string(&mut s).unwrap(); print!("hello {}", s); }\n',
        EXIT3: "fn main() { std::process::exit(3); }\n",
        CRASH: 'fn main() { let v: Vec<i32> = vec![]; println!("{}", v[1]); }\n',
        BROKEN: "fn main() { let x: i32 = \"no\"; }\n",
        SPIN: "fn main() { loop {} }\n",
        HOG: "fn main() { let mut v = Vec::new(); loop { v.push(vec![1u8; 1 << 20]); } }\n",
        MULTI: [("main.rs", 'mod util;\nfn main() { println!("hello {}", util::twice(21)); }\n'),
                ("util.rs", "pub fn twice(x: i32) -> i32 { 2 * x }\n")],
    },
    "ruby": {
        HELLO: 'puts "hello #{STDIN.read.strip}"\n',
        EXIT3: "exit 3\n",
        CRASH: 'raise "boom"\n',
        SPIN: "loop {}\n",
        HOG: 'a = []; loop { a << "x" * (1 << 20) }\n',
        MULTI: [("main.rb", 'require_relative "util"\nputs "hello #{twice(21)}"\n'),
                ("util.rb", "def twice(x) = 2 * x\n")],
    },
    "perl": {
        HELLO: 'my $s = <STDIN>; print "hello $s";\n',
        EXIT3: "exit 3;\n",
        CRASH: 'die "boom\\n";\n',
        SPIN: "1 while 1;\n",
        HOG: 'my @a; push @a, "x" x (1 << 20) while 1;\n',
        MULTI: [("main.pl", ('use FindBin; use lib $FindBin::Bin; use Util;\n'
                            'print "hello ", Util::twice(21), "\\n";\n')),
                ("Util.pm", "package Util; sub twice { 2 * shift } 1;\n")],
    },
    "python": {
        HELLO: 'print("hello", input())\n',
        EXIT3: "raise SystemExit(3)\n",
        CRASH: "1 / 0\n",
        SPIN: "while True: pass\n",
        HOG: "x = []\nwhile True: x.append(bytearray(1 << 20))\n",
        MULTI: [("main.py", "import util\nprint('hello', util.twice(21))\n"),
                ("util.py", "def twice(x): return 2 * x\n")],
    },
    "bash": {
        HELLO: 'read s; echo "hello $s"\n',
        EXIT3: "exit 3\n",
        CRASH: "set -e; false; echo unreachable\n",
        SPIN: "while :; do :; done\n",
        HOG: "x=0123456789; while :; do x=$x$x; done\n",
        MULTI: [("main.sh", '. "$(dirname "$0")/lib.sh"; echo "hello $(twice 21)"\n'),
                ("lib.sh", "twice() { echo $(( 2 * $1 )); }\n")],
    },
}
PROGRAMS["sh"] = PROGRAMS["bash"]  # those are POSIX shell programs: the same for both
