// @ts-check
/**
 * The dashboard's DOM building blocks, shared by app.js (as `FerryDom`): elements from a tag,
 * attributes and children, keyed table rows updated in place, cells rewritten only when their
 * content changed. Text goes in with textContent (the `text` attribute), never as HTML.
 * Loaded before app.js by index.html; plain JavaScript served as it is, like the rest.
 */
(function () {
  'use strict';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /** @param {string} id */
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

  /**
   * @param {string} tag
   * @param {Record<string, any>} [attrs]
   * @param {...(Node|string|null|undefined|false)} children
   */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
    return el;
  }

  /** @param {string} tag @param {Record<string, any>} [attrs] */
  function s(tag, attrs = {}) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') el.textContent = v;
      else el.setAttribute(k, String(v));
    }
    return el;
  }

  /** @param {string} text @param {string} kind */
  const badge = (text, kind) => h('span', { class: `badge ${kind}`, text });

  /**
   * Keyed rows: `fill(tr, item)` builds or updates a row's cells in place; rows of gone keys go.
   * @param {HTMLTableSectionElement} tbody @param {any[]} items @param {(x: any) => string} key
   * @param {(tr: HTMLTableRowElement, item: any, fresh: boolean) => void} fill
   */
  function syncRows(tbody, items, key, fill) {
    /** @type {Map<string, HTMLTableRowElement>} */
    const existing = new Map();
    for (const tr of /** @type {HTMLTableRowElement[]} */ ([...tbody.rows])) existing.set(tr.dataset.key || '', tr);
    let prev = null;
    for (const item of items) {
      const k = key(item);
      let tr = existing.get(k);
      const fresh = !tr;
      if (!tr) {
        tr = /** @type {HTMLTableRowElement} */ (h('tr', { 'data-key': k }));
      }
      existing.delete(k);
      fill(tr, item, fresh);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of existing.values()) tr.remove();
  }

  /**
   * Sets cell `i` of a row (creating cells as needed) to `content`, only when its text changed.
   * @param {HTMLTableRowElement} tr @param {number} i @param {() => (Node|string)} content @param {string} sig
   * @param {boolean} [header]
   */
  function cell(tr, i, content, sig, header = false) {
    while (tr.cells.length <= i) tr.append(h(header && tr.cells.length === 0 ? 'th' : 'td', header && tr.cells.length === 0 ? { scope: 'row' } : {}));
    const td = tr.cells[i];
    if (td.dataset.sig === sig) return td;
    td.dataset.sig = sig;
    td.replaceChildren(content());
    return td;
  }

  /** @type {any} */ (window).FerryDom = { $, h, s, badge, syncRows, cell };
})();
