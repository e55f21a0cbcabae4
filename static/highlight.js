// Syntax highlighting with the vendored Prism (vendor/prism.js, a classic script that
// index.html loads before the modules): code in the job view, and an overlay that shows the
// editor's text highlighted under the textarea's transparent text, so the textarea keeps all
// of its own keyboard, selection, undo and accessibility behaviour.

// orq's language -> Prism's grammar
const GRAMMARS = {
  python: 'python', bash: 'bash', sh: 'bash', c: 'c', cpp: 'cpp', java: 'java',
  javascript: 'javascript', go: 'go', rust: 'rust', ruby: 'ruby', perl: 'perl',
};
// characters: Prism takes about 1 ms per 1,000 here, so the editor highlights at most
// MAX_EDITOR and stays plain beyond, while a job's code, highlighted once when it is shown,
// may be larger
const MAX_EDITOR = 30_000;
const MAX_VIEW = 200_000;

function grammar(language) {
  const prism = window.Prism;
  const name = GRAMMARS[language] || language;
  return prism && prism.languages[name] ? { prism, name } : null;
}

/** Put ``text`` in ``node``, highlighted as ``language`` where possible; true if it was. */
export function highlightInto(node, text, language, limit = MAX_VIEW) {
  const found = grammar(language);
  if (!found || text.length > limit) {
    node.textContent = text;
    return false;
  }
  node.innerHTML = found.prism.highlight(text, found.prism.languages[found.name], found.name);
  node.dataset.language = found.name;
  return true;
}

export class Highlighter {
  /** ``textarea`` and ``pre`` (aria-hidden, holding one <code>) share a wrapper element. */
  constructor(textarea, pre) {
    Object.assign(this, { textarea, pre, code: pre.querySelector('code') });
    this.wrapper = pre.parentElement;
    this.language = null;
    this.frame = 0;
    textarea.addEventListener('input', () => this.changed());
    textarea.addEventListener('scroll', () => this.sync());
  }

  setLanguage(language) {
    this.language = language;
    this.render();
  }

  /** At most once a frame (before it is painted): one paste or fill can be many edits. */
  changed() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  }

  render() {
    const text = this.textarea.value;
    const on = text.length <= MAX_EDITOR && Boolean(grammar(this.language))
      && highlightInto(this.code, text, this.language, MAX_EDITOR);
    if (!on) this.code.textContent = '';
    this.wrapper.classList.toggle('plain', !on); // plain: the textarea shows its own text
    this.sync();
  }

  sync() {
    this.pre.scrollTop = this.textarea.scrollTop;
    this.pre.scrollLeft = this.textarea.scrollLeft;
  }
}
