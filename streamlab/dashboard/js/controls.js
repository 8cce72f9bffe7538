// Two-way binding between form controls and session fields.
//
// * Server state arrives over SSE (and in PATCH answers) and is written into every control
//   the user is not editing right now, so two windows on one session stay in sync.
// * A control becomes "dirty" on the first input; it remembers the control_revision it
//   was based on.  Sending a change PATCHes {set, fields: [only the changed fields],
//   base_revision}.
// * 400 -> the reason appears next to each named control; 409 revision_conflict -> the
//   conflicting controls are reloaded from the session in the answer and say so.

import { patch, enc, ApiError, describeError } from "./api.js";
import { h } from "./ui.js";

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class SessionControls {
  constructor(sessionId) {
    this.sessionId = sessionId;
    this.session = null;
    this.revision = null;
    this.controls = new Map(); // field -> {read, write, el, err, dirty, baseRev}
    this.listeners = [];
  }

  /** Called with the newest session object (SSE, PATCH answer, GET). */
  update(session, { force = [] } = {}) {
    if (!session) return;
    this.session = session;
    this.revision = session.control_revision;
    for (const [name, c] of this.controls) {
      if (!(name in session)) continue;
      if (c.dirty && !force.includes(name)) continue;
      if (document.activeElement === c.el && !force.includes(name) && c.el.type !== "checkbox") continue;
      c.write(session[name]);
      if (force.includes(name)) c.dirty = false;
    }
    for (const fn of this.listeners) fn(session);
  }

  onUpdate(fn) {
    this.listeners.push(fn);
  }

  /**
   * Registers *el* as the control of *field*.  kind: "text" | "number" | "checkbox" |
   * "select" | "list" (comma-separated list of strings) | custom {read, write}.
   * Returns a wrapper element with the control's error line.
   */
  bind(field, el, kind = "text") {
    const err = h("small.field-error", { dataset: { errorFor: field } });
    let read;
    let write;
    if (typeof kind === "object") {
      ({ read, write } = kind);
    } else if (kind === "checkbox") {
      read = () => el.checked;
      write = (v) => { el.checked = !!v; };
    } else if (kind === "number") {
      read = () => (el.value === "" ? null : Number(el.value));
      write = (v) => { el.value = v === null || v === undefined ? "" : String(v); };
    } else if (kind === "list") {
      read = () => el.value.split(",").map((s) => s.trim()).filter(Boolean);
      write = (v) => { el.value = Array.isArray(v) ? v.join(", ") : (v || ""); };
    } else {
      read = () => el.value;
      write = (v) => {
        const s = v === null || v === undefined ? "" : String(v);
        if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === s)) {
          el.append(h("option", { value: s }, s));
        }
        el.value = s;
      };
    }
    el.dataset.field = field;
    const c = { el, read, write, err, dirty: false, baseRev: null };
    const mark = () => {
      if (!c.dirty) { c.dirty = true; c.baseRev = this.revision; }
      el.classList.add("dirty");
    };
    el.addEventListener("input", mark);
    el.addEventListener("change", mark);
    this.controls.set(field, c);
    if (this.session && field in this.session) write(this.session[field]);
    return err;
  }

  /** Current value of a field's control. */
  value(field) {
    return this.controls.get(field).read();
  }

  /** Fields among *fields* whose control differs from the server value. */
  changed(fields) {
    return fields.filter((f) => this.controls.has(f) && !same(this.controls.get(f).read(), this.session ? this.session[f] : undefined));
  }

  clearErrors(fields) {
    for (const f of fields) {
      const c = this.controls.get(f);
      if (c) { c.err.textContent = ""; c.err.className = "field-error"; }
    }
  }

  /**
   * PATCHes *fields* (their controls' values, or *values* when given).  Only fields that
   * differ from the server are sent unless *always*.  *line* is the form's message line.
   * Returns the new session or null.
   */
  async send(fields, line, { values = null, always = false, label = "" } = {}) {
    const list = always || values ? fields : this.changed(fields);
    this.clearErrors(fields);
    if (line) line.clear();
    if (!list.length) {
      if (line) line.info("Nothing changed.");
      for (const f of fields) this.settle(f);
      return null;
    }
    const set = {};
    for (const f of list) set[f] = values && f in values ? values[f] : this.controls.get(f).read();
    const bases = list.map((f) => this.controls.get(f)).filter((c) => c && c.dirty && c.baseRev !== null).map((c) => c.baseRev);
    const base = bases.length ? bases.sort((a, b) => Number(a) - Number(b))[0] : this.revision;
    const body = { set, fields: list };
    if (base !== null && base !== undefined) body.base_revision = base;
    try {
      const r = await patch(`/api/session/${enc(this.sessionId)}`, body);
      for (const f of list) this.settle(f);
      this.update(r.session, { force: list });
      if (line) line.ok(label ? `${label} applied.` : "Applied.");
      return r.session;
    } catch (err) {
      this.handleError(err, list, line);
      return null;
    }
  }

  settle(field) {
    const c = this.controls.get(field);
    if (c) { c.dirty = false; c.baseRev = null; c.el.classList.remove("dirty"); }
  }

  /** Puts an API error next to the controls it names (400) or reloads them (409). */
  handleError(err, fields, line) {
    if (err instanceof ApiError && err.isConflict) {
      const conflicts = (err.body.conflicts || []).map((c) => (typeof c === "string" ? c : c.field || c.name));
      const names = conflicts.length ? conflicts : fields;
      for (const f of names) {
        this.settle(f);
        const c = this.controls.get(f);
        if (c) { c.err.textContent = "Changed by someone else meanwhile — reloaded the current value."; c.err.className = "field-error warn"; }
      }
      this.update(err.body.session, { force: names });
      if (line) line.show(`Conflict: ${names.join(", ")} changed meanwhile; the controls now show the server's values. Apply again to overwrite.`);
      return;
    }
    let placed = false;
    if (err instanceof ApiError) {
      for (const [f, reason] of Object.entries(err.fields)) {
        const c = this.controls.get(f);
        if (c) { c.err.textContent = `${reason}`; c.err.className = "field-error"; placed = true; }
      }
    }
    if (line) line.show(placed ? `Not applied: ${describeError(err)}` : err);
  }
}
