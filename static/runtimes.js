// The submit form's runtime choice: language, version and image from GET /runtimes and
// GET /images. An image narrows the languages and versions to its own; a language (and
// version) sorts the images into those that have it and, in a group, the others, which stay
// choosable (choosing one switches to a language it has) so that no image is out of reach.

import { $, el } from './util.js';

// what people call a language, and the tool its version belongs to
const NAMES = {
  python: ['Python'], bash: ['Bash'], sh: ['sh'], c: ['C', 'gcc'], cpp: ['C++', 'g++'],
  java: ['Java', 'JDK'], javascript: ['JavaScript', 'Node.js'], go: ['Go'], rust: ['Rust'],
  ruby: ['Ruby'], perl: ['Perl'],
};
const HOST = 'host';

export function languageName(language) {
  return (NAMES[language] || [language])[0];
}

/** "C (gcc 12.2.0)", "Python 3.11.2", "sh (posix)": a language with its versions. */
export function runtimeLabel(language, versions = []) {
  const [name, tool] = NAMES[language] || [language];
  const text = versions.join(', ');
  if (!text) return name;
  if (tool) return `${name} (${tool} ${text})`;
  return /^\d/.test(text) ? `${name} ${text}` : `${name} (${text})`;
}

/** "sha256:e22d22b9713a" for a long digest (the image name says the rest). */
export function shortDigest(digest) {
  const match = /^(\w+:)?([0-9a-f]{12})[0-9a-f]+$/.exec(digest || '');
  return match ? (match[1] || '') + match[2] : digest || '';
}

// versions compare as the server compares them: numerically, component by component
function versionKey(version) {
  return String(version).split(/[.+-]/).map((p) => (/^\d+$/.test(p) ? Number(p) : -1));
}

export function compareVersions(a, b) {
  const x = versionKey(a);
  const y = versionKey(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

function matches(version, prefix) {
  return version === prefix || version.startsWith(prefix + '.');
}

const unique = (items) => [...new Set(items)];

export class RuntimeChoice {
  /** ``onLanguage(language)`` hears every change of the chosen language. */
  constructor({ api, onLanguage }) {
    Object.assign(this, { api, onLanguage });
    this.runtimes = null; // null: not loaded, the page's built-in Python/Bash choice stays
    this.images = [];
    this.seq = 0;
    this.fields = { language: $('language'), version: $('version'), image: $('image') };
    this.current = this.fields.language.value;
    for (const select of Object.values(this.fields)) {
      select.addEventListener('change', () => this.render(this.value));
    }
  }

  /** Ask the server what it offers now; on failure the choice stays as it is. */
  async load() {
    const seq = ++this.seq;
    let runtimes;
    let images;
    try {
      [runtimes, images] = await Promise.all([this.api.runtimes(), this.api.images()]);
    } catch {
      return false; // an older server, or a passing failure: the form still works
    }
    if (seq !== this.seq || !Array.isArray(runtimes) || !runtimes.length) return false;
    this.runtimes = runtimes;
    this.images = Array.isArray(images) ? images : [];
    $('version-field').hidden = false;
    $('image-field').hidden = false;
    this.render(this.value);
    return true;
  }

  get value() {
    const { language, version, image } = this.fields;
    return { language: language.value, version: version.value, image: image.value };
  }

  /** The request's fields: the language always, version and image only when picked. */
  body() {
    const { language, version, image } = this.value;
    return { language, ...(version && { version }), ...(image && { image }) };
  }

  /** Choose these, as far as the server offers them (what a job ran with, for Run again).
   *  A version or image that is what the server would pick anyway is left on its default. */
  set({ language, version, image }) {
    if (!this.runtimes) {
      this.render({ language });
      return;
    }
    const canonical = this.resolve(language, '', '');
    const same = canonical && canonical.version === version && canonical.image === image;
    this.render(same ? { language } : { language, version, image });
  }

  /** The runtime the server would pick (SPEC section 9): the host's when no image is named
   *  and the host has it, else the newest version in the newest image. */
  resolve(language, version, image) {
    const created = new Map(this.images.map((i) => [i.name, i.created_at || '']));
    const fits = (this.runtimes || []).filter((r) => r.language === language
      && (!image || r.image === image) && (!version || matches(r.version, version)));
    if (!image && fits.some((r) => r.image === HOST)) return fits.find((r) => r.image === HOST);
    const later = (a, b) => compareVersions(a.version, b.version)
      || (created.get(a.image) || '').localeCompare(created.get(b.image) || '');
    return fits.reduce((best, r) => (best && later(best, r) >= 0 ? best : r), null);
  }

  render({ language, version = '', image = '' }) {
    if (this.runtimes) {
      this.fill({ language, version, image });
    } else if ([...this.fields.language.options].some((o) => o.value === language)) {
      this.fields.language.value = language;
    }
    const now = this.fields.language.value;
    if (now !== this.current) {
      this.current = now;
      this.onLanguage(now);
    }
  }

  fill({ language, version, image }) {
    const all = this.runtimes;
    const names = unique([...this.images.map((i) => i.name), ...all.map((r) => r.image)]);
    if (!all.some((r) => r.image === image)) image = ''; // gone, or provides nothing
    const inImage = image ? all.filter((r) => r.image === image) : all;
    const languages = unique(inImage.map((r) => r.language));
    if (!languages.includes(language)) language = languages.includes('python') ? 'python' : languages[0];
    const versionsOf = (lang) => unique(inImage.filter((r) => r.language === lang)
      .map((r) => r.version)).sort(compareVersions).reverse();
    const versions = versionsOf(language);
    if (!versions.includes(version)) version = '';
    const has = (name) => all.some((r) => r.image === name && r.language === language
      && (!version || r.version === version));
    const others = names.filter((name) => !has(name) && all.some((r) => r.image === name));
    const chosen = this.resolve(language, version, image);

    setOptions(this.fields.language, languages.map((l) => [l, runtimeLabel(l, versionsOf(l))]),
      language);
    const versionItems = versions.length === 1 ? [['', versions[0]]]
      : [['', `Default (${chosen.version})`], ...versions.map((v) => [v, v])];
    setOptions(this.fields.version, versionItems, version);
    this.fields.version.disabled = versions.length === 1;
    const about = new Map(this.images.map((i) => [i.name, `${i.source || ''} ${shortDigest(i.digest)}`]));
    const without = `Without ${runtimeLabel(language, version ? [version] : [])}`;
    setOptions(this.fields.image, [['', `Automatic (${chosen.image})`],
      ...names.filter(has).map((name) => [name, name, about.get(name)]),
      ...others.map((name) => [name, name, about.get(name), without])], image);
  }
}

/** Replace a select's options (only when they changed, so an open list is left alone);
 *  an item is [value, text, title?, group?], and items of one group share an <optgroup>. */
function setOptions(select, items, value) {
  const signature = JSON.stringify(items);
  if (select.dataset.options !== signature) {
    const nodes = [];
    for (const [v, text, title, group] of items) {
      const option = el('option', { value: v, text, ...(title && { title: title.trim() }) });
      const last = nodes[nodes.length - 1];
      if (!group) nodes.push(option);
      else if (last && last.tagName === 'OPTGROUP' && last.label === group) last.append(option);
      else nodes.push(el('optgroup', { label: group }, option));
    }
    select.replaceChildren(...nodes);
    select.dataset.options = signature;
  }
  select.value = value;
}
