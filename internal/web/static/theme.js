// The colour theme: the reader's choice, stored in this browser, else the
// system's preference (app.css applies light for prefers-color-scheme:
// light while <html> has no data-theme).
//
// A classic script loaded from every page's head, not a module: it runs
// before the body is parsed, so a page chosen light is never first drawn
// dark. (Modules run only after parsing, and inline scripts are barred by
// the Content-Security-Policy.) It wires the header's switch, and tells
// scripts that draw colours themselves (the symbol chart) of each change
// with a "stockpipe:theme" event on document, detail {theme}.
(() => {
  const KEY = 'stockpipe.theme';
  const EVENT = 'stockpipe:theme';
  const root = document.documentElement;
  const systemLight = window.matchMedia('(prefers-color-scheme: light)');

  // Storage can be refused (privacy settings): the switch still works for
  // the page, it is just not remembered.
  const stored = () => {
    try {
      const v = localStorage.getItem(KEY);
      return v === 'light' || v === 'dark' ? v : null;
    } catch {
      return null;
    }
  };
  const store = (v) => {
    try {
      localStorage.setItem(KEY, v);
    } catch { /* not remembered */ }
  };

  const effective = () => root.dataset.theme || (systemLight.matches ? 'light' : 'dark');

  let shown = null;
  let button = null;

  // Brings the switch up to date and, when the colours changed, tells the
  // page's scripts.
  const changed = () => {
    const now = effective();
    if (button) button.setAttribute('aria-pressed', String(now === 'light'));
    if (shown !== null && now !== shown) document.dispatchEvent(new CustomEvent(EVENT, { detail: { theme: now } }));
    shown = now;
  };

  const apply = (choice) => {
    if (choice) root.dataset.theme = choice;
    else delete root.dataset.theme;
    changed();
  };

  apply(stored());

  systemLight.addEventListener('change', changed);
  // Another tab's choice: a trader with several pages open sees one theme.
  window.addEventListener('storage', (ev) => {
    if (ev.key === KEY || ev.key === null) apply(stored());
  });

  const wire = () => {
    button = document.getElementById('theme-toggle');
    if (!button) return;
    button.addEventListener('click', () => {
      const next = effective() === 'light' ? 'dark' : 'light';
      store(next);
      apply(next);
    });
    // Without this script the button could do nothing, so it stays hidden.
    button.hidden = false;
    changed();
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
})();
