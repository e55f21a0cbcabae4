// A small code editor on a plain <textarea>: Tab/Shift+Tab indent and dedent
// (also across a selection), Enter keeps the indentation, Ctrl/Cmd+Enter runs.
// Escape releases the Tab key for one press, so keyboard users can leave the box.

const INDENT = '    ';

export function makeEditor(textarea, { onRun }) {
  let tabEscapes = false;
  textarea.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      onRun();
    } else if (ev.key === 'Escape') {
      tabEscapes = true;
    } else if (ev.key === 'Tab' && !tabEscapes && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      ev.preventDefault();
      ev.shiftKey ? dedent(textarea) : indent(textarea);
    } else if (ev.key === 'Enter' && !ev.shiftKey && !ev.altKey) {
      ev.preventDefault();
      newline(textarea);
    } else {
      tabEscapes = false;
    }
  });
  textarea.addEventListener('blur', () => { tabEscapes = false; });
}

/** Replace [start, end) with text, through the browser's undo stack where it can. */
function replace(ta, start, end, text, selectStart, selectEnd) {
  ta.focus();
  ta.setSelectionRange(start, end);
  const done = document.queryCommandSupported?.('insertText')
    && document.execCommand('insertText', false, text);
  if (!done) {
    ta.setRangeText(text, start, end, 'end');
    ta.dispatchEvent(new Event('input', { bubbles: true }));
  }
  if (selectStart !== undefined) ta.setSelectionRange(selectStart, selectEnd);
}

function lineStart(value, pos) {
  return value.lastIndexOf('\n', pos - 1) + 1;
}

function selectedLines(ta) {
  const { value, selectionStart: s, selectionEnd: e } = ta;
  const start = lineStart(value, s);
  // a selection ending at the very start of a line does not include that line
  const endPos = e > s && value[e - 1] === '\n' ? e - 1 : e;
  let end = value.indexOf('\n', endPos);
  if (end === -1) end = value.length;
  return { start, end, lines: value.slice(start, end).split('\n') };
}

function indent(ta) {
  const { selectionStart: s, selectionEnd: e, value } = ta;
  if (s === e || !value.slice(s, e).includes('\n')) {
    const col = s - lineStart(value, s);
    replace(ta, s, e, ' '.repeat(INDENT.length - (col % INDENT.length)));
    return;
  }
  const { start, end, lines } = selectedLines(ta);
  const text = lines.map((l) => INDENT + l).join('\n');
  replace(ta, start, end, text, start, start + text.length);
}

function dedent(ta) {
  const { start, end, lines } = selectedLines(ta);
  const text = lines.map((l) => l.replace(/^( {1,4}|\t)/, '')).join('\n');
  if (text === lines.join('\n')) return;
  const single = ta.selectionStart === ta.selectionEnd;
  const removed = lines.join('\n').length - text.length;
  const caret = Math.max(start, ta.selectionStart - removed);
  replace(ta, start, end, text, single ? caret : start, single ? caret : start + text.length);
}

function newline(ta) {
  const { value, selectionStart: s, selectionEnd: e } = ta;
  const line = value.slice(lineStart(value, s), s);
  let lead = line.match(/^[ \t]*/)[0];
  if (/:\s*$/.test(line) || /\{\s*$/.test(line)) lead += INDENT; // python blocks, bash braces
  replace(ta, s, e, '\n' + lead);
}
