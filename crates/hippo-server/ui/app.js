// Hippo inspector: a client of this server's public REST API, nothing else.
// Every view is a URL (`#/memories?user_id=ana`), so an operator can send a
// link. Memory text is untrusted (it may hold injected markup or
// instructions): it is only ever set as text, never parsed as HTML.

const KEY = "hippo.key";
const view = document.getElementById("view");

/** Builds an element: `h("td", {class: "x"}, "text", child)`. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "for") el.htmlFor = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An API error, with the server's message. */
class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || body?.detail || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

/** Calls the API with the tab's key; JSON in and out (text for /metrics). */
async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) throw new ApiError(resp.status, typeof data === "object" ? data : null);
  return data;
}

/** What the tab's key may do (`read`, `write`, `admin`), asked once per key. */
let whoami = null;
async function whoamiInfo() {
  if (!whoami) whoami = api("GET", "/v1/whoami").catch(() => ({ access: "read" }));
  return whoami;
}
async function access() {
  return (await whoamiInfo()).access;
}
const RANK = { read: 0, write: 1, admin: 2 };
const may = (have, need) => RANK[have] >= RANK[need];
/** An admin key not bound to a user or agent: it sees the whole tenant (audit log, keys, statistics). */
const tenantWideAdmin = (me) => me.access === "admin" && !me.user_id && !me.agent_id;

function errorBox(err) {
  const hint =
    err.status === 401
      ? " Set an API key (top right)."
      : err.status === 403
        ? " This key may not do that."
        : "";
  return h("p", { class: "error", role: "alert" }, err.message + hint);
}

function empty(text) {
  return h("p", { class: "muted" }, text);
}

const fmtTime = (t) => (t ? new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
const fmt = (x, d = 3) => (x === undefined || x === null ? "–" : Number(x).toFixed(d));
const sig = (x) => (x === undefined || x === null ? "–" : Number(x).toPrecision(3));

/** The hash route: `#/name/rest?query` → {name, rest, params}. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const [name = "", ...rest] = path.split("/");
  return { name: name || "browse", rest: rest.map(decodeURIComponent), params: new URLSearchParams(query) };
}

function go(name, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  location.hash = `#/${name}${s ? `?${s}` : ""}`;
}

/** A filter form whose submit becomes the URL (so the view is a link). */
function filterForm(name, fields, params, submitLabel) {
  const form = h("form", { class: "filters", role: "search" });
  for (const f of fields) {
    const id = `f-${f.name}`;
    let input;
    if (f.options) {
      input = h("select", { id, name: f.name }, f.options.map((o) => h("option", { value: o }, o || f.blank || "(any)")));
      input.value = params.get(f.name) || f.value || "";
    } else {
      input = h("input", {
        id,
        name: f.name,
        type: f.type || "text",
        placeholder: f.placeholder,
        value: params.get(f.name) || f.value || "",
        step: f.step,
        min: f.min,
        autocomplete: "off",
      });
    }
    form.append(h("label", { for: id, class: f.wide ? "wide" : undefined }, f.label, input));
  }
  form.append(h("button", { class: "primary", type: "submit" }, submitLabel));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go(name, Object.fromEntries(new FormData(form)));
  });
  return form;
}

// The API's kinds (a unit test keeps this list equal to `MemoryKind::ALL`).
const KINDS = ["", "message", "document", "chunk", "fact", "summary", "profile", "procedure"];

const SCOPE_FIELDS = [
  { name: "user_id", label: "User" },
  { name: "agent_id", label: "Agent" },
  { name: "session_id", label: "Session" },
];

function scopeOf(params) {
  const s = {};
  for (const k of ["user_id", "agent_id", "session_id"]) if (params.get(k)) s[k] = params.get(k);
  return s;
}

// ---- Memories: one scope's memories, filtered and paged ----

async function memoriesView({ params }) {
  // Quarantined text is shown to admin keys only: others are not offered it.
  const statuses = ["active", "archived", "deleted", "active,archived,deleted"];
  if (may(await access(), "admin")) statuses.push("quarantined");
  const fields = [
    ...SCOPE_FIELDS,
    { name: "kind", label: "Kind", options: KINDS },
    { name: "status", label: "Status", options: statuses, value: "active" },
    { name: "order", label: "Order", options: ["desc", "asc"], value: "desc" },
    { name: "as_of", label: "As of (RFC 3339)", placeholder: "2024-05-01T00:00:00Z" },
    { name: "event_time_from", label: "Event time from", placeholder: "2024-01-01T00:00:00Z" },
    { name: "event_time_to", label: "Event time before", placeholder: "2025-01-01T00:00:00Z" },
    { name: "metadata", label: "Metadata (JSON)", placeholder: '{"topic":"travel"}' },
  ];
  const parts = [h("h1", {}, "Memories"), filterForm("memories", fields, params, "List")];
  const scope = scopeOf(params);
  if (!Object.keys(scope).length) {
    parts.push(empty("Name a user, an agent or a session to list its memories."));
    return parts;
  }
  const q = new URLSearchParams({ ...scope, limit: "50", order: params.get("order") || "desc" });
  for (const k of ["kind", "status", "as_of", "event_time_from", "event_time_to", "metadata", "cursor"]) {
    if (params.get(k)) q.set(k, params.get(k));
  }
  const page = await api("GET", `/v1/memories?${q}`);
  if (!page.results.length) {
    parts.push(empty("No memories match."));
    return parts;
  }
  const rows = page.results.map((m) =>
    h(
      "tr",
      {},
      h("td", { class: "mono" }, fmtTime(m.event_time || m.recorded_at)),
      h("td", {}, m.kind),
      h("td", {}, h("span", { class: `tag ${m.status}` }, m.status)),
      h("td", {}, m.name || m.role || ""),
      h("td", { class: "content" }, h("a", { href: `#/memory/${m.id}` }, m.memory)),
    ),
  );
  parts.push(
    h(
      "table",
      { class: "memories" },
      h("thead", {}, h("tr", {}, ["time", "kind", "status", "speaker", "memory"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    ),
  );
  const pager = h(
    "div",
    { class: "pager" },
    h("span", { class: "muted" }, `${page.results.length} shown`),
    h("a", { href: `#/timeline?${new URLSearchParams(scope)}` }, "On a timeline"),
  );
  if (page.next_cursor) {
    const next = Object.fromEntries(params);
    next.cursor = page.next_cursor;
    pager.append(h("a", { href: `#/memories?${new URLSearchParams(next)}` }, "Next page →"));
  }
  parts.push(pager);
  return parts;
}

// ---- Browse: owners (users, agents) → sessions → memories ----

const ownerKey = (s) => JSON.stringify([s.user_id ?? null, s.agent_id ?? null]);
const ownerLabel = (s) =>
  [s.user_id ? `user ${s.user_id}` : null, s.agent_id ? `agent ${s.agent_id}` : null].filter(Boolean).join(" · ") || "(no owner)";
const scopeParams = (s) => {
  const p = {};
  for (const k of ["user_id", "agent_id", "session_id"]) if (s[k]) p[k] = s[k];
  return p;
};

/** Sums scopes that share a user and agent (their sessions) into owners. */
function owners(scopes) {
  const byOwner = new Map();
  for (const s of scopes) {
    const k = ownerKey(s);
    const o = byOwner.get(k) || { user_id: s.user_id, agent_id: s.agent_id, memories: 0, sessions: 0, last_recorded: s.last_recorded };
    o.memories += s.memories;
    if (s.session_id) o.sessions += 1;
    if (s.last_recorded > o.last_recorded) o.last_recorded = s.last_recorded;
    byOwner.set(k, o);
  }
  return [...byOwner.values()];
}

async function browseView({ params }) {
  const statuses = ["active", "archived", "deleted", "active,archived,deleted"];
  if (may(await access(), "admin")) statuses.push("quarantined");
  const fields = [
    { name: "user_id", label: "User" },
    { name: "agent_id", label: "Agent" },
    { name: "kind", label: "Kind", options: KINDS },
    { name: "status", label: "Status", options: statuses, value: "active" },
  ];
  const parts = [h("h1", {}, "Browse"), filterForm("browse", fields, params, "Show")];
  const q = new URLSearchParams(scopeOf(params));
  for (const k of ["kind", "status"]) if (params.get(k)) q.set(k, params.get(k));
  const resp = await api("GET", `/v1/scopes?${q}`);
  if (!resp.scopes.length) {
    parts.push(empty(q.toString() ? "No memories match." : "Nothing stored yet: add memories through the API, MCP or the CLI."));
    return parts;
  }
  const listing = (s) => {
    const p = new URLSearchParams(scopeParams(s));
    for (const k of ["kind", "status"]) if (params.get(k)) p.set(k, params.get(k));
    return `#/memories?${p}`;
  };
  const owner = params.get("user_id") || params.get("agent_id");
  const total = resp.scopes.reduce((n, s) => n + s.memories, 0);
  parts.push(
    h(
      "p",
      { class: "muted" },
      `${total} memories in ${resp.scopes.length} scopes${resp.truncated ? " (the most recent shown: narrow by user or agent)" : ""}.`,
    ),
  );
  if (!owner) {
    parts.push(h("h2", {}, "Owners"));
    parts.push(
      table(
        ["owner", "memories", "sessions", "last written"],
        owners(resp.scopes).map((o) => {
          const drill = new URLSearchParams(scopeParams(o));
          return [
            h("a", { href: `#/browse?${drill}` }, ownerLabel(o)),
            h("span", { class: "num" }, o.memories),
            h("span", { class: "num" }, o.sessions),
            h("span", { class: "mono" }, fmtTime(o.last_recorded)),
          ];
        }),
        { class: "owners" },
      ),
    );
    return parts;
  }
  parts.push(
    h("h2", {}, ownerLabel(scopeOf(params))),
    h(
      "p",
      {},
      h("a", { href: listing(scopeOf(params)) }, "All their memories"),
      " · ",
      h("a", { href: `#/timeline?${new URLSearchParams(scopeOf(params))}` }, "Timeline"),
    ),
    table(
      ["session", "memories", "first written", "last written"],
      resp.scopes.map((s) => [
        h("a", { href: listing(s) }, s.session_id ? s.session_id : "(outside any session)"),
        h("span", { class: "num" }, s.memories),
        h("span", { class: "mono" }, fmtTime(s.first_recorded)),
        h("span", { class: "mono" }, fmtTime(s.last_recorded)),
      ]),
      { class: "sessions" },
    ),
  );
  return parts;
}

/** A table: column names and rows of cells. */
function table(columns, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
  );
}

// ---- Timeline: a person's or session's memories on a time axis ----

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/**
 * Two lanes on one time axis: when each memory happened (event time) and
 * when it was recorded, joined by a line — a long line is something told
 * long after it happened.
 */
function timelineChart(memories) {
  const W = 1000, H = 150, L = 90, R = 20;
  const ev = (m) => Date.parse(m.event_time || m.recorded_at);
  const rec = (m) => Date.parse(m.recorded_at);
  const times = memories.flatMap((m) => [ev(m), rec(m)]);
  let lo = Math.min(...times), hi = Math.max(...times);
  if (hi === lo) { lo -= 3600e3; hi += 3600e3; }
  const x = (t) => L + ((t - lo) / (hi - lo)) * (W - L - R);
  const yEvent = 40, yRec = 110;
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "timeline", role: "img", "aria-label": `${memories.length} memories from ${fmtTime(new Date(lo))} to ${fmtTime(new Date(hi))}` },
    s("text", { x: 4, y: yEvent + 4, class: "lane" }, "happened"),
    s("text", { x: 4, y: yRec + 4, class: "lane" }, "recorded"),
    s("line", { x1: L, x2: W - R, y1: yEvent, y2: yEvent, class: "axis" }),
    s("line", { x1: L, x2: W - R, y1: yRec, y2: yRec, class: "axis" }),
    s("text", { x: L, y: H - 8, class: "tick" }, fmtTime(new Date(lo)).slice(0, 10)),
    s("text", { x: W - R, y: H - 8, class: "tick end" }, fmtTime(new Date(hi)).slice(0, 10)),
  );
  for (const m of memories) {
    const a = s("a", { href: `#/memory/${m.id}`, class: `kind-${m.kind}` });
    a.append(
      s("title", {}, `${m.kind} · ${fmtTime(m.event_time)} → recorded ${fmtTime(m.recorded_at)}\n${m.memory.slice(0, 200)}`),
      s("line", { x1: x(ev(m)), y1: yEvent, x2: x(rec(m)), y2: yRec, class: "join" }),
      s("circle", { cx: x(ev(m)), cy: yEvent, r: 4 }),
      s("circle", { cx: x(rec(m)), cy: yRec, r: 4 }),
    );
    svg.append(a);
  }
  return svg;
}

async function timelineView({ params }) {
  const fields = [...SCOPE_FIELDS, { name: "kind", label: "Kind", options: KINDS }];
  const parts = [h("h1", {}, "Timeline"), filterForm("timeline", fields, params, "Show")];
  const scope = scopeOf(params);
  if (!Object.keys(scope).length) {
    parts.push(empty("Name a user, an agent or a session to see its memories in time."));
    return parts;
  }
  const q = new URLSearchParams({ ...scope, limit: "500", order: "desc" });
  if (params.get("kind")) q.set("kind", params.get("kind"));
  const owner = scope.user_id ? { user_id: scope.user_id } : scope.agent_id ? { agent_id: scope.agent_id } : null;
  const [page, digests, profileInputs] = await Promise.all([
    api("GET", `/v1/memories?${q}`),
    api("GET", `/v1/memories?${new URLSearchParams({ ...scope, kind: "summary", limit: "20", order: "desc" })}`),
    owner ? api("GET", `/v1/memories?${new URLSearchParams({ ...owner, kind: "profile", limit: "1" })}`) : null,
  ]);
  // The built profile is asked for only when there is something to build it
  // from (an absent one is a 404, which a browser logs as an error).
  const profile = profileInputs?.results.length ? await api("GET", `/v1/profile?${new URLSearchParams(owner)}`).catch(() => null) : null;
  if (!page.results.length) {
    parts.push(empty("No memories match."));
    return parts;
  }
  // Newest first from the API; the chart and the list read oldest first.
  const memories = page.results.slice().reverse();
  parts.push(
    h(
      "p",
      { class: "muted" },
      `${memories.length} memories${page.next_cursor ? " (the latest 500)" : ""}. Each joins when it happened to when it was recorded.`,
    ),
    h("div", { class: "card chart" }, timelineChart(memories)),
  );
  const side = h("aside", { class: "side" });
  side.append(
    h("h2", {}, "Profile"),
    profile ? h("div", { class: "card" }, h("a", { href: `#/memory/${profile.id}` }, fmtTime(profile.recorded_at)), h("pre", {}, profile.memory)) : empty("No profile built."),
  );
  side.append(h("h2", {}, "Digests"));
  side.append(
    digests && digests.results.length
      ? digests.results.map((d) => h("div", { class: "card" }, h("a", { href: `#/memory/${d.id}` }, fmtTime(d.event_time || d.recorded_at)), h("pre", {}, d.memory)))
      : empty("No digests."),
  );
  const list = table(
    ["happened", "recorded", "kind", "memory"],
    memories.map((m) => [
      h("span", { class: "mono" }, fmtTime(m.event_time)),
      h("span", { class: "mono" }, fmtTime(m.recorded_at)),
      m.kind,
      h("a", { href: `#/memory/${m.id}` }, m.memory),
    ]),
    { class: "timeline-list" },
  );
  parts.push(h("div", { class: "split" }, h("div", {}, list), side));
  return parts;
}

// ---- One memory: its fields, versions and events ----

function fieldList(pairs) {
  return h(
    "dl",
    { class: "fields" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

async function memoryView({ rest }) {
  const id = rest[0];
  const [m, history] = await Promise.all([
    api("GET", `/v1/memories/${encodeURIComponent(id)}`),
    api("GET", `/v1/memories/${encodeURIComponent(id)}/history`).catch(() => null),
  ]);
  const parts = [
    h("h1", {}, `${m.kind} `, h("span", { class: `tag ${m.status}` }, m.status)),
    h("div", { class: "card" }, h("pre", {}, m.memory)),
    actions(m, await access()),
    fieldList([
      ["id", h("span", { class: "mono" }, m.id)],
      ["user", m.user_id],
      ["agent", m.agent_id],
      ["session", m.session_id],
      ["speaker", [m.name, m.role].filter(Boolean).join(" · ")],
      ["event time", fmtTime(m.event_time)],
      ["recorded", fmtTime(m.recorded_at)],
      ["valid", `${fmtTime(m.valid_from)} → ${m.valid_to ? fmtTime(m.valid_to) : "now"}`],
      ["version of", m.version_of ? h("a", { href: `#/memory/${m.version_of}` }, m.version_of) : null],
      ["trust", m.trust],
      ["flags", m.flags && m.flags.length ? m.flags.join(", ") : null],
      ["source", m.source],
      ["expires", fmtTime(m.expires_at)],
      ["model", m.embedding_model],
    ]),
    h("h2", {}, "Provenance"),
    h("pre", { class: "card" }, JSON.stringify(m.provenance, null, 2)),
  ];
  const note = m.metadata?.note;
  if (note && typeof note === "object") parts.push(...noteSection(note));
  if (m.metadata && Object.keys(m.metadata).length) {
    parts.push(h("h2", {}, "Metadata"), h("pre", { class: "card" }, JSON.stringify(m.metadata, null, 2)));
  }
  if (m.strength) parts.push(...strengthSection(m));
  const owner = m.user_id ? { user_id: m.user_id } : m.agent_id ? { agent_id: m.agent_id } : null;
  if (owner) {
    const grants = await api("GET", `/v1/grants?${new URLSearchParams({ ...owner, include_revoked: "true" })}`).catch(() => null);
    const covering = (grants?.results || []).filter(
      (g) => g.memory_id === m.id || (!g.memory_id && ["user_id", "agent_id", "session_id"].every((k) => !g.scope[k] || g.scope[k] === m[k])),
    );
    parts.push(h("h2", {}, `Shared through (${covering.length})`));
    parts.push(
      covering.length
        ? table(
            ["grant", "what", "to", "given", "expires", "revoked"],
            covering.map((g) => [
              h("span", { class: "mono" }, g.id.slice(0, 8)),
              g.memory_id ? "this memory" : scopeText(g.scope),
              scopeText(g.grantee),
              h("span", { class: "mono" }, fmtTime(g.created_at)),
              h("span", { class: "mono" }, fmtTime(g.expires_at)),
              h("span", { class: "mono" }, fmtTime(g.revoked_at)),
            ]),
          )
        : empty("Not shared with anyone."),
    );
  }
  if (history) {
    parts.push(h("h2", {}, `Versions (${history.versions.length})`));
    if (history.versions.length > 1) parts.push(h("div", { class: "card chart" }, validityChart(history.versions, m.id)));
    parts.push(
      h(
        "table",
        { class: "versions" },
        h("thead", {}, h("tr", {}, ["valid from", "valid to", "recorded", "status", "memory"].map((c) => h("th", { scope: "col" }, c)))),
        h(
          "tbody",
          {},
          history.versions.map((v) =>
            h(
              "tr",
              { "aria-current": v.id === m.id ? "true" : undefined },
              h("td", { class: "mono" }, fmtTime(v.valid_from)),
              h("td", { class: "mono" }, v.valid_to ? fmtTime(v.valid_to) : "now"),
              h("td", { class: "mono" }, fmtTime(v.recorded_at)),
              h("td", {}, h("span", { class: `tag ${v.status}` }, v.status)),
              h("td", { class: "content" }, h("a", { href: `#/memory/${v.id}` }, v.memory)),
            ),
          ),
        ),
      ),
    );
    parts.push(h("h2", {}, `Events (${history.events.length})`));
    parts.push(
      history.events.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ["at", "event", "by", "reason"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              history.events.map((e) =>
                h("tr", {}, h("td", { class: "mono" }, fmtTime(e.at)), h("td", {}, e.kind), h("td", {}, e.origin), h("td", {}, e.reason || "")),
              ),
            ),
          )
        : empty("No events."),
    );
  }
  return parts;
}

/**
 * Each version as a bar over the time it held (valid from → to, or now),
 * with a tick where it was recorded: which version was true when, and when
 * Hippo learnt it.
 */
function validityChart(versions, current) {
  const now = Date.now();
  const from = (v) => Date.parse(v.valid_from);
  const to = (v) => (v.valid_to ? Date.parse(v.valid_to) : now);
  const times = versions.flatMap((v) => [from(v), to(v), Date.parse(v.recorded_at)]);
  let lo = Math.min(...times), hi = Math.max(...times);
  if (hi - lo < 60e3) { lo -= 30e3; hi += 30e3; }
  const W = 1000, row = 22, L = 10, R = 10;
  const x = (t) => L + ((t - lo) / (hi - lo)) * (W - L - R);
  const H = versions.length * row + 24;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "validity", role: "img", "aria-label": `${versions.length} versions over time` });
  versions.forEach((v, i) => {
    const y = 4 + i * row;
    const a = s("a", { href: `#/memory/${v.id}` });
    a.append(
      s("title", {}, `${fmtTime(v.valid_from)} → ${v.valid_to ? fmtTime(v.valid_to) : "now"}, recorded ${fmtTime(v.recorded_at)}\n${v.memory.slice(0, 160)}`),
      s("rect", { x: x(from(v)), y, width: Math.max(3, x(to(v)) - x(from(v))), height: row - 8, rx: 3, class: v.id === current ? "bar current" : "bar" }),
      s("line", { x1: x(Date.parse(v.recorded_at)), x2: x(Date.parse(v.recorded_at)), y1: y - 2, y2: y + row - 6, class: "recorded" }),
    );
    svg.append(a);
  });
  svg.append(
    s("text", { x: L, y: H - 6, class: "tick" }, fmtTime(new Date(lo))),
    s("text", { x: W - R, y: H - 6, class: "tick end" }, fmtTime(new Date(hi))),
  );
  return svg;
}

/** An extracted fact's note: keywords, tags, context and links. */
function noteSection(note) {
  return [
    h("h2", {}, "Note"),
    fieldList([
      ["keywords", (note.keywords || []).join(", ")],
      ["tags", (note.tags || []).join(", ")],
      ["context", note.context],
      ["links", (note.links || []).length ? h("span", {}, note.links.map((id, i) => [i ? ", " : "", h("a", { href: `#/memory/${id}`, class: "mono" }, id.slice(0, 8))])) : null],
    ]),
  ];
}

/**
 * Its strength now and its decay: retention halves every `stability_days`
 * (the kind's half-life, longer with use), each `wrong` halves it again;
 * below the kind's threshold maintenance archives it.
 */
function strengthSection(m) {
  const st = m.strength;
  const parts = [
    h("h2", {}, "Strength"),
    fieldList([
      ["now", `${fmt(st.value, 3)} (retention ${fmt(st.retention, 3)})`],
      ["age", `${fmt(st.age_days, 1)} days since learnt or reinforced`],
      ["half-life", st.stability_days == null ? "does not decay" : `${fmt(st.stability_days, 1)} days`],
      ["archived below", st.archive_below == null ? "never archived for weakness" : fmt(st.archive_below, 2)],
      ["feedback", m.usage ? `${m.usage.used} used, ${m.usage.helpful} helpful, ${m.usage.wrong} wrong` : null],
    ]),
  ];
  if (st.stability_days == null) return parts;
  const W = 600, H = 160, L = 40, B = 24;
  const span = Math.max(3 * st.stability_days, 1.2 * st.age_days, 1);
  const penalty = st.retention > 0 ? st.value / st.retention : 1;
  const x = (d) => L + (d / span) * (W - L - 10);
  const y = (v) => 8 + (1 - v) * (H - B - 8);
  const d = Array.from({ length: 61 }, (_, i) => {
    const t = (i / 60) * span;
    return `${i ? "L" : "M"}${x(t).toFixed(1)},${y(penalty * 0.5 ** (t / st.stability_days)).toFixed(1)}`;
  }).join(" ");
  const svg = s(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, class: "decay", role: "img", "aria-label": `strength ${fmt(st.value)} at ${fmt(st.age_days, 1)} days` },
    s("line", { x1: L, x2: W - 10, y1: y(0), y2: y(0), class: "axis" }),
    s("line", { x1: L, x2: L, y1: y(1), y2: y(0), class: "axis" }),
    s("text", { x: L - 6, y: y(1) + 4, class: "tick end" }, "1"),
    s("text", { x: L - 6, y: y(0) + 4, class: "tick end" }, "0"),
    s("text", { x: W - 10, y: H - 6, class: "tick end" }, `${Math.round(span)} days`),
    s("path", { d, class: "curve" }),
    st.archive_below == null ? null : s("line", { x1: L, x2: W - 10, y1: y(st.archive_below), y2: y(st.archive_below), class: "threshold" }),
    s("circle", { cx: x(st.age_days), cy: y(st.value), r: 5, class: "now" }),
  );
  parts.push(h("div", { class: "card chart" }, svg));
  return parts;
}

/** The actions the key allows on memory `m` (none for a read key). */
function actions(m, have) {
  if (!may(have, "write")) return null;
  const status = h("p", { class: "muted", role: "status" });
  const run = async (method, path, body, question) => {
    if (question && !window.confirm(question)) return;
    try {
      await api(method, path, body);
      render();
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  };
  const id = encodeURIComponent(m.id);
  const text = h("textarea", { name: "content", rows: 3, "aria-label": "New content" });
  text.value = m.memory;
  const reason = h("input", { name: "reason", placeholder: "why (kept in its history)", "aria-label": "Reason" });
  const edit = h(
    "form",
    { class: "edit" },
    text,
    reason,
    h("button", { class: "primary", type: "submit" }, "Save as a new version"),
  );
  edit.addEventListener("submit", (e) => {
    e.preventDefault();
    run("PATCH", `/v1/memories/${id}`, { content: text.value, reason: reason.value || undefined });
  });
  const buttons = h("div", { class: "buttons" });
  if (m.status === "quarantined") {
    // Only admins see quarantined memories at all.
    buttons.append(
      h(
        "button",
        { type: "button", class: "primary", onclick: () => run("POST", `/v1/memories/${id}/approve`, {}, "Approve? It becomes an ordinary memory, found by search.") },
        "Approve",
      ),
    );
  } else if (m.status === "active") {
    for (const signal of ["used", "helpful", "wrong"]) {
      buttons.append(h("button", { type: "button", title: `Feedback: ${signal}`, onclick: () => run("POST", `/v1/memories/${id}/feedback`, { signal }) }, `Mark ${signal}`));
    }
    if (!m.valid_to) {
      buttons.append(
        h(
          "button",
          { type: "button", onclick: () => run("POST", `/v1/memories/${id}/invalidate`, { reason: reason.value || undefined }, "Invalidate? It stops holding from now (kept, with no successor).") },
          "Invalidate",
        ),
      );
    }
    buttons.append(h("button", { type: "button", onclick: () => run("POST", `/v1/memories/${id}/archive`, {}) }, "Archive"));
    buttons.append(
      h("button", { type: "button", onclick: () => run("DELETE", `/v1/memories/${id}`, undefined, "Delete this memory? It can be restored.") }, "Delete"),
    );
  } else {
    buttons.append(h("button", { type: "button", onclick: () => run("POST", `/v1/memories/${id}/restore`, {}) }, "Restore"));
  }
  if (may(have, "admin")) {
    buttons.append(
      h(
        "button",
        {
          type: "button",
          class: "danger",
          onclick: () =>
            run(
              "DELETE",
              `/v1/memories/${id}?hard=true`,
              undefined,
              "Erase permanently? Every version of this memory, its vectors and keywords go, and what was derived from it is erased too. This cannot be undone.",
            ),
        },
        "Erase permanently",
      ),
    );
  }
  // A quarantined memory is reviewed (approved or erased), not edited.
  const editable = m.status !== "quarantined";
  return h("section", { class: "card actions", "aria-label": "Actions" }, editable ? edit : null, buttons, status);
}

// ---- Search lab: a search with its options, and why each result came ----

function meter(cls, value, max = 1) {
  const span = h("span");
  span.style.width = `${Math.max(0, Math.min(1, value / max)) * 100}%`;
  return h("div", { class: `meter ${cls}`, role: "img", "aria-label": fmt(value) }, span);
}

function resultCard(r, i, before, other) {
  const s = r.scores;
  const speaker = (src) => (src.name || src.role ? `${src.name || src.role}: ` : "");
  // An excerpt shows its messages, the hits marked; a single memory is its own hit.
  const lines = r.sources
    ? r.sources.map((src) => h("div", { class: `line${src.hit ? " hit" : ""}` }, h("pre", {}, speaker(src) + src.memory)))
    : [h("div", { class: "line hit" }, h("pre", {}, r.memory))];
  // In a comparison: where the other setting ranked it.
  const moved = before === undefined ? null : h("span", { class: "tag moved" }, before === -1 ? `not in ${other}` : `${other} #${before + 1}`);
  const rank = (x) => (x == null ? "–" : `#${x}`);
  return h(
    "article",
    { class: "card result" },
    h(
      "div",
      { class: "head" },
      h("span", { class: "rank" }, `#${i + 1}`),
      h("a", { href: `#/memory/${r.id}` }, r.kind),
      h("span", { class: "muted mono" }, fmtTime(r.event_time || r.recorded_at)),
      h("span", { class: "score" }, `score ${fmt(r.score)}`),
      h("span", {}, `relevance ${fmt(r.relevance)}`),
      h("span", { class: "muted" }, `${r.tokens} tokens`),
      moved,
      r.shared_via ? h("span", { class: "tag" }, "shared") : null,
    ),
    h("div", { class: "excerpt" }, lines),
    h(
      "div",
      { class: "scores" },
      h("span", {}, `keyword ${rank(s.keyword_rank)}`),
      meter("kw", s.keyword_norm),
      h("span", { class: "mono" }, s.keyword == null ? "no match" : `${fmt(s.keyword_norm)} (${sig(s.keyword)})`),
      h("span", {}, `vector ${rank(s.vector_rank)}`),
      meter("vec", s.vector_norm),
      h("span", { class: "mono" }, `${fmt(s.vector_norm)} (${fmt(s.vector)})`),
      h("span", {}, "neighbours"),
      meter("nb", s.neighbour),
      h("span", { class: "mono" }, `${fmt(s.neighbour)} (+${fmt(s.neighbour_lift)})`),
      h("span", {}, "recency"),
      meter("rec", s.recency),
      h("span", { class: "mono" }, fmt(s.recency)),
    ),
    s.strength < 1 || s.kind_weight !== 1 || s.reinforcement > 0
      ? h("div", { class: "muted small" }, `strength ${fmt(s.strength, 2)} · reinforcement ${fmt(s.reinforcement, 2)} · kind weight ${fmt(s.kind_weight, 2)}`)
      : null,
  );
}

// The options a search takes; in a comparison, setting B's are prefixed `b_`.
const SEARCH_OPTIONS = [
  { name: "top_k", label: "top_k", type: "number", min: 1, int: true },
  { name: "budget_tokens", label: "Budget (tokens)", type: "number", min: 1, int: true },
  { name: "context_before", label: "Context before", type: "number", min: 0, int: true },
  { name: "context_after", label: "Context after", type: "number", min: 0, int: true },
  { name: "diversity", label: "Diversity", type: "number", step: "0.1", min: 0, float: true },
  { name: "kind", label: "Kind", options: KINDS },
  { name: "reference_time", label: "Reference time", placeholder: "RFC 3339" },
  { name: "as_of", label: "As of", placeholder: "RFC 3339" },
  { name: "format", label: "Format", options: ["", "prompt"], blank: "json" },
];

function searchBody(params, prefix) {
  const body = { query: params.get("query"), ...scopeOf(params) };
  for (const o of SEARCH_OPTIONS) {
    const v = params.get(prefix + o.name);
    if (!v) continue;
    if (o.name === "kind") body.filters = { kind: v };
    else if (o.int) body[o.name] = Number.parseInt(v, 10);
    else if (o.float) body[o.name] = Number.parseFloat(v);
    else body[o.name] = v;
  }
  return body;
}

/** One setting's answer: its budget use, where the time went, its results. */
function searchColumn(label, resp, others, other) {
  const t = resp.timings;
  return h(
    "section",
    { class: "column", "aria-label": label },
    label ? h("h2", {}, label) : null,
    h(
      "div",
      { class: "timings" },
      h("span", {}, resp.results.length === 1 ? "1 result" : `${resp.results.length} results`),
      h("span", { class: "budget" }, `${resp.tokens} / ${resp.budget_tokens} tokens`, meter("vec", resp.tokens, resp.budget_tokens)),
      h("span", {}, `total ${fmt(resp.took_ms, 1)} ms`),
    ),
    h(
      "div",
      { class: "timings stages muted" },
      h("span", {}, `query embedding ${fmt(t.embed_ms, 1)} ms, then vector channel ${fmt(t.vector_ms, 1)} ms`),
      h("span", {}, `keyword channel ${fmt(t.keyword_ms, 1)} ms (meanwhile)`),
      h("span", {}, `fusion ${fmt(t.fusion_ms, 1)} ms`),
      h("span", {}, `packing ${fmt(t.packing_ms, 1)} ms`),
    ),
    resp.prompt ? h("details", { class: "card" }, h("summary", {}, "As a prompt block"), h("pre", {}, resp.prompt)) : null,
    resp.results.length ? resp.results.map((r, i) => resultCard(r, i, others ? others.indexOf(r.id) : undefined, other)) : empty("Nothing found."),
  );
}

async function searchView({ params }) {
  const fields = [
    { name: "query", label: "Query", wide: true, placeholder: "What does Ana eat?" },
    ...SCOPE_FIELDS,
    ...SEARCH_OPTIONS.map((o) => (o.name === "top_k" ? { ...o, value: "10" } : o)),
  ];
  const compare = SEARCH_OPTIONS.map((o) => ({ ...o, name: `b_${o.name}`, label: `B: ${o.label}`, blank: "(as A)", placeholder: "as A" }));
  const form = filterForm("search", fields, params, "Search");
  const details = h(
    "details",
    { class: "compare-settings wide", open: SEARCH_OPTIONS.some((o) => params.get(`b_${o.name}`)) || undefined },
    h("summary", {}, "Compare with other settings (B, side by side)"),
  );
  // Fields of setting B live in the same form, so one submit sets both.
  const bForm = filterForm("search", compare, params, "");
  details.append(h("div", { class: "b-fields" }, [...bForm.querySelectorAll("label")]));
  form.insertBefore(details, form.querySelector("button"));
  const parts = [h("h1", {}, "Search lab"), form];
  if (!params.get("query")) {
    parts.push(empty("Ask a question of a scope to see what comes back, and why."));
    return parts;
  }
  const withB = SEARCH_OPTIONS.some((o) => params.get(`b_${o.name}`));
  if (!withB) {
    parts.push(searchColumn(null, await api("POST", "/v1/search", searchBody(params, ""))));
    return parts;
  }
  // B starts from A's settings and changes what it names.
  const bParams = new URLSearchParams(params);
  for (const o of SEARCH_OPTIONS) if (params.get(`b_${o.name}`)) bParams.set(o.name, params.get(`b_${o.name}`));
  const [a, b] = await Promise.all([api("POST", "/v1/search", searchBody(params, "")), api("POST", "/v1/search", searchBody(bParams, ""))]);
  parts.push(
    h(
      "div",
      { class: "compare" },
      searchColumn("A", a, b.results.map((r) => r.id), "B"),
      searchColumn("B", b, a.results.map((r) => r.id), "A"),
    ),
  );
  return parts;
}

// ---- Jobs: background work (LLM extraction, consolidation) and its plans ----

const costText = (c) =>
  c && c.llm_calls ? `${c.llm_calls} calls · ${c.prompt_tokens ?? 0} → ${c.completion_tokens ?? 0} tokens` : "no LLM call";

async function jobsView({ params }) {
  const fields = [...SCOPE_FIELDS, { name: "state", label: "State", options: ["", "pending", "running", "done", "failed"] }];
  const parts = [h("h1", {}, "Jobs"), filterForm("jobs", fields, params, "Show")];
  const q = new URLSearchParams({ ...scopeOf(params), limit: "50" });
  for (const k of ["state", "before"]) if (params.get(k)) q.set(k, params.get(k));
  const resp = await api("GET", `/v1/jobs?${q}`);
  parts.push(
    h(
      "div",
      { class: "counts" },
      ["pending", "running", "done", "failed"].map((k) =>
        h("a", { class: `count ${k}`, href: `#/jobs?${new URLSearchParams({ ...scopeOf(params), state: k })}` }, h("strong", {}, resp[k]), ` ${k}`),
      ),
      h("span", { class: "muted" }, resp.llm ? `LLM: ${resp.llm}` : "No LLM configured: consolidation without one."),
    ),
  );
  if (!resp.jobs.length) {
    parts.push(empty("No jobs match."));
    return parts;
  }
  parts.push(
    table(
      ["id", "kind", "scope", "state", "attempts", "cost", "queued", "last change", "error"],
      resp.jobs.map((j) => [
        h("a", { href: `#/job/${j.id}` }, String(j.id)),
        j.kind,
        scopeText(j),
        h("span", { class: `tag ${j.state}` }, j.state),
        h("span", { class: "num" }, j.attempts),
        costText(j.cost),
        h("span", { class: "mono" }, fmtTime(j.created_at)),
        h("span", { class: "mono" }, fmtTime(j.updated_at)),
        j.last_error ? h("span", { class: "error-text" }, j.last_error.slice(0, 120)) : "",
      ]),
      { class: "jobs" },
    ),
  );
  if (resp.next_before) {
    const next = new URLSearchParams({ ...Object.fromEntries(params), before: String(resp.next_before) });
    parts.push(h("div", { class: "pager" }, h("a", { href: `#/jobs?${next}` }, "Older →")));
  }
  return parts;
}

async function jobView({ rest }) {
  const j = await api("GET", `/v1/jobs/${encodeURIComponent(rest[0])}`);
  const parts = [
    h("h1", {}, `Job ${j.id}: ${j.kind} `, h("span", { class: `tag ${j.state}` }, j.state)),
    fieldList([
      ["scope", scopeText(j)],
      ["attempts", String(j.attempts)],
      ["steps applied", String(j.step)],
      ["cost", costText(j.cost)],
      ["queued", fmtTime(j.created_at)],
      ["last change", fmtTime(j.updated_at)],
    ]),
  ];
  if (j.last_error) parts.push(h("h2", {}, "Last error"), h("pre", { class: "card error" }, j.last_error));
  parts.push(h("h2", {}, "Plan"));
  if (Array.isArray(j.plan) && j.plan.every((op) => op && typeof op.op === "string")) {
    parts.push(
      j.plan.length
        ? table(
            ["#", "decision", "kind", "text", "target", "reason"],
            j.plan.map((op, i) => [
              h("span", { class: "num" }, i + 1),
              h("span", { class: `tag op-${op.op}`, "aria-current": i < j.step ? "true" : undefined }, op.op),
              op.kind || "",
              op.text || "",
              op.target || op.id ? h("a", { href: `#/memory/${op.target || op.id}`, class: "mono" }, (op.target || op.id).slice(0, 8)) : "",
              op.reason || "",
            ]),
            { class: "plan" },
          )
        : empty("The model decided nothing worth storing."),
    );
  } else if (j.plan) {
    parts.push(h("pre", { class: "card" }, JSON.stringify(j.plan, null, 2)));
  } else {
    parts.push(empty(j.state === "pending" ? "Not planned yet." : "No plan recorded."));
  }
  if (Object.keys(j.cost || {}).length) parts.push(h("h2", {}, "Cost"), h("pre", { class: "card" }, JSON.stringify(j.cost, null, 2)));
  return parts;
}

// ---- Governance: admission refusals, grants, the audit log, keys ----

const scopeText = (x) =>
  [x.user_id && `user ${x.user_id}`, x.agent_id && `agent ${x.agent_id}`, x.session_id && `session ${x.session_id}`].filter(Boolean).join(" · ") || "(whole tenant)";

async function governanceView({ params }) {
  const me = await whoamiInfo();
  const tenantAdmin = tenantWideAdmin(me);
  const parts = [h("h1", {}, "Governance"), filterForm("governance", SCOPE_FIELDS, params, "Show")];
  const scope = scopeOf(params);
  const q = new URLSearchParams({ ...scope, limit: "50" });
  const [rejections, grants] = await Promise.all([
    api("GET", `/v1/rejections?${q}`),
    api("GET", `/v1/grants?${new URLSearchParams({ ...scope, include_revoked: "true" })}`),
  ]);
  parts.push(h("h2", {}, `Refused by admission (${rejections.results.length}${rejections.results.length === 50 ? "+" : ""})`));
  parts.push(
    rejections.results.length
      ? table(
          ["at", "scope", "kind", "memory", "utility", "novelty", "confidence", "score / threshold"],
          rejections.results.map((r) => [
            h("span", { class: "mono" }, fmtTime(r.at)),
            scopeText(r),
            r.kind,
            h("span", { class: "content" }, r.memory),
            fmt(r.admission.utility, 2),
            fmt(r.admission.novelty, 2),
            fmt(r.admission.confidence, 2),
            `${fmt(r.admission.score, 2)} < ${fmt(r.admission.threshold, 2)}`,
          ]),
          { class: "rejections" },
        )
      : empty("Admission refused nothing here."),
  );
  if (me.access === "admin") {
    // Quarantine review starts from the scopes that hold quarantined memories.
    const q = await api("GET", `/v1/scopes?${new URLSearchParams({ ...scope, status: "quarantined" })}`);
    const n = q.scopes.reduce((a, x) => a + x.memories, 0);
    parts.push(h("h2", {}, `Quarantined, to review (${n})`));
    parts.push(
      q.scopes.length
        ? table(
            ["scope", "quarantined", "last"],
            q.scopes.map((x) => [
              h("a", { href: `#/memories?${new URLSearchParams({ ...scopeParams(x), status: "quarantined" })}` }, scopeText(x)),
              h("span", { class: "num" }, x.memories),
              h("span", { class: "mono" }, fmtTime(x.last_recorded)),
            ]),
            { class: "quarantined" },
          )
        : empty("Nothing is waiting in quarantine."),
    );
  }
  parts.push(h("h2", {}, `Grants given (${grants.results.length})`));
  parts.push(
    grants.results.length
      ? table(
          ["given", "what", "to", "by", "expires", "revoked"],
          grants.results.map((g) => [
            h("span", { class: "mono" }, fmtTime(g.created_at)),
            g.memory_id ? h("a", { href: `#/memory/${g.memory_id}` }, "one memory") : scopeText(g.scope),
            scopeText(g.grantee),
            g.created_by,
            h("span", { class: "mono" }, fmtTime(g.expires_at)),
            h("span", { class: "mono" }, fmtTime(g.revoked_at)),
          ]),
          { class: "grants" },
        )
      : empty("No grants."),
  );
  if (scope.user_id || scope.agent_id) {
    const owner = scope.user_id ? { user_id: scope.user_id } : { agent_id: scope.agent_id };
    const received = await api("GET", `/v1/grants?${new URLSearchParams({ ...owner, direction: "received", include_revoked: "true" })}`);
    parts.push(h("h2", {}, `Grants received (${received.results.length})`));
    parts.push(
      received.results.length
        ? table(
            ["given", "what", "from", "by", "expires", "revoked"],
            received.results.map((g) => [
              h("span", { class: "mono" }, fmtTime(g.created_at)),
              g.memory_id ? h("a", { href: `#/memory/${g.memory_id}` }, "one memory") : "their memories",
              scopeText(g.scope),
              g.created_by,
              h("span", { class: "mono" }, fmtTime(g.expires_at)),
              h("span", { class: "mono" }, fmtTime(g.revoked_at)),
            ]),
            { class: "grants-received" },
          )
        : empty("Nothing is shared with them."),
    );
  }
  if (!tenantAdmin) {
    parts.push(empty("The audit log and the keys are shown to tenant-wide admin keys."));
    return parts;
  }
  // The operator: a tenant-wide admin key of the default tenant.
  const operator = me.tenant === "default";
  parts.push(...(await auditSection(params)));
  if (operator) parts.push(...(await tenantsSection(params)));
  parts.push(...(await keysSection(operator ? params.get("tenant") : null)));
  return parts;
}

/**
 * A page of the audit log (from `after`, the first by default), and whether
 * its chain holds: verifying reads the whole log, so its verdict (and the
 * link to the latest entries, which needs the count) arrives after the page.
 */
async function auditSection(params) {
  const after = Math.max(0, Number.parseInt(params.get("after") || "0", 10) || 0);
  const page = await api("GET", `/v1/audit?${new URLSearchParams({ after: String(after), limit: "50" })}`);
  const at = (n) => `#/governance?${new URLSearchParams({ ...Object.fromEntries(params), after: String(Math.max(0, n)) })}`;
  const nav = h("div", { class: "pager" });
  if (after > 0) nav.append(h("a", { href: at(after - 50) }, "← Earlier"));
  if (page.next_after) nav.append(h("a", { href: at(page.next_after) }, "Later →"));
  const verdict = h("p", { class: "muted", role: "status" }, "Verifying the chain…");
  api("GET", "/v1/audit/verify")
    .then((check) => {
      verdict.className = check.ok ? "ok" : "error";
      verdict.setAttribute("role", check.ok ? "status" : "alert");
      verdict.textContent = check.ok
        ? `Chain intact: ${check.entries} entries, each linked to the one before.`
        : `Chain broken at entry ${check.first_bad}: ${check.problem}`;
      if (check.entries > after + 50) nav.append(h("a", { href: at(check.entries - 50) }, "Latest →"));
    })
    .catch((err) => verdict.replaceWith(errorBox(err)));
  return [
    h("h2", {}, "Audit log"),
    verdict,
    page.entries.length
      ? table(
          ["#", "at", "who", "action", "target", "detail"],
          page.entries.map((e) => [
            h("span", { class: "num" }, e.seq),
            h("span", { class: "mono" }, fmtTime(e.at)),
            e.actor,
            e.action,
            /^[0-9a-f-]{36}$/.test(e.target) ? h("a", { href: `#/memory/${e.target}`, class: "mono" }, e.target) : h("span", { class: "mono" }, e.target),
            h("span", { class: "mono small" }, JSON.stringify(e.detail)),
          ]),
          { class: "audit" },
        )
      : empty("No entries here."),
    nav,
  ];
}

/** The server's tenants, for the operator: each one's keys, and a new one. */
async function tenantsSection(params) {
  const { tenants } = await api("GET", "/v1/tenants").catch(() => ({ tenants: null }));
  if (!tenants) return [];
  const status = h("div", { role: "status" });
  const form = h(
    "form",
    { class: "filters new-tenant" },
    h("label", {}, "New tenant", h("input", { name: "id", autocomplete: "off", placeholder: "acme", required: true })),
    h("button", { class: "primary", type: "submit" }, "Create tenant"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const made = await api("POST", "/v1/tenants", { id: form.id.value.trim() });
      go("governance", { tenant: made.id });
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  });
  const current = params.get("tenant") || "default";
  return [
    h("h2", {}, `Tenants (${tenants.length})`),
    h("p", { class: "muted" }, "This key is the server's operator (an admin key of the default tenant). Erasing a tenant is done with the CLI on the server: hippo tenant erase ID."),
    table(
      ["tenant", "active keys"],
      tenants.map((t) => [
        t.id === current ? h("strong", {}, t.id) : h("a", { href: `#/governance?${new URLSearchParams({ tenant: t.id })}` }, t.id),
        h("span", { class: "num" }, t.active_keys),
      ]),
      { class: "tenants" },
    ),
    form,
    status,
  ];
}

/** A tenant's keys (this key's, or for the operator the one chosen): create (the secret shown once) and revoke. */
async function keysSection(tenant) {
  const q = tenant ? `?${new URLSearchParams({ tenant })}` : "";
  const { keys } = await api("GET", `/v1/keys${q}`).catch((err) => (err.status === 404 ? { keys: null } : Promise.reject(err)));
  if (!keys) return [h("h2", {}, "Keys"), empty("This server keeps no keys.")];
  const me = await whoamiInfo();
  const status = h("div", { role: "status" });
  const form = h(
    "form",
    { class: "filters new-key" },
    h("label", {}, "Access", h("select", { name: "access" }, ["read", "write", "admin"].map((a) => h("option", { value: a }, a)))),
    h("label", {}, "Name", h("input", { name: "name", autocomplete: "off" })),
    h("label", {}, "Acts for user", h("input", { name: "user_id", autocomplete: "off" })),
    h("label", {}, "Expires in days", h("input", { name: "expires_in_days", type: "number", min: 1 })),
    h("button", { class: "primary", type: "submit" }, "Create key"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(form));
    const body = { access: f.access };
    if (tenant) body.tenant = tenant;
    if (f.name) body.name = f.name;
    if (f.user_id) body.user_id = f.user_id;
    if (f.expires_in_days) body.expires_in_days = Number.parseInt(f.expires_in_days, 10);
    if (!keys.length && !window.confirm("This server runs without keys: from this key on, every request needs one. Create it?")) return;
    try {
      const made = await api("POST", "/v1/keys", body);
      // Shown once: the server keeps only its hash.
      status.replaceChildren(
        h("div", { class: "card secret" }, h("p", {}, "Copy this key now; it is not shown again:"), h("pre", { class: "mono" }, made.secret)),
      );
      tableBody.prepend(keyRow(made.key));
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  });
  const keyRow = (k) => {
    const revoke = k.revoked_at
      ? null
      : h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: async () => {
              const own = k.id === me.key ? " This is the key this page uses." : "";
              if (!window.confirm(`Revoke key ${k.id}? Requests with it are refused from now on.${own}`)) return;
              try {
                await api("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`);
                render();
              } catch (err) {
                status.replaceChildren(errorBox(err));
              }
            },
          },
          "Revoke",
        );
    return h(
      "tr",
      {},
      [h("span", { class: "mono" }, k.id), k.access, k.name || "", scopeText(k), h("span", { class: "mono" }, fmtTime(k.created_at)), h("span", { class: "mono" }, fmtTime(k.expires_at)), k.revoked_at ? h("span", { class: "tag deleted" }, `revoked ${fmtTime(k.revoked_at)}`) : revoke].map((c) => h("td", {}, c)),
    );
  };
  const tableBody = h("tbody", {}, keys.slice().reverse().map(keyRow));
  return [
    h("h2", {}, tenant ? `Keys of ${tenant} (${keys.length})` : `Keys (${keys.length})`),
    form,
    status,
    h("table", { class: "keys" }, h("thead", {}, h("tr", {}, ["id", "access", "name", "acts for", "created", "expires", ""].map((c) => h("th", { scope: "col" }, c)))), tableBody),
  ];
}

// ---- Health: the server and the tenant's store, sampled from /metrics ----

/** Prometheus text → [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const total = (ms, name, pred = () => true) => ms.filter((x) => x.name === name && pred(x.labels)).reduce((n, x) => n + x.value, 0);

/** Latency quantile `q` (ms) of the requests between two samples, from the histogram's buckets. */
function quantile(prev, cur, q) {
  const buckets = (ms) => {
    const by = new Map();
    // The inspector's own sampling of /metrics is left out.
    for (const x of ms) if (x.name === "hippo_http_request_duration_seconds_bucket" && x.labels.route !== "/metrics") by.set(x.labels.le, (by.get(x.labels.le) || 0) + x.value);
    return by;
  };
  const a = buckets(prev), b = buckets(cur);
  const les = [...b.keys()].map((le) => [le === "+Inf" ? Infinity : Number(le), le]).sort((x, y) => x[0] - y[0]);
  const counts = les.map(([bound, le]) => [bound, (b.get(le) || 0) - (a.get(le) || 0)]);
  const n = counts.length ? counts[counts.length - 1][1] : 0;
  if (n <= 0) return null;
  let lower = 0, below = 0;
  for (const [bound, c] of counts) {
    if (c >= q * n) {
      if (bound === Infinity) return lower * 1e3;
      const within = c - below;
      return (lower + (bound - lower) * (within > 0 ? (q * n - below) / within : 1)) * 1e3;
    }
    lower = bound;
    below = c;
  }
  return null;
}

const SAMPLE_MS = 2000;
const samples = [];
let poller = null;
async function sampleMetrics() {
  const text = await api("GET", "/metrics");
  samples.push({ t: Date.now(), m: parseMetrics(text) });
  if (samples.length > 150) samples.shift();
}

/** A sparkline of `points` ([t, value]) with its latest value. */
function sparkline(title, points, unit) {
  const W = 260, H = 56;
  const vals = points.map((p) => p[1]).filter((v) => v !== null && Number.isFinite(v));
  const last = vals.length ? vals[vals.length - 1] : null;
  const hi = Math.max(1e-9, ...vals);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", role: "img", "aria-label": `${title}: ${last === null ? "no data" : sig(last)} ${unit}` });
  if (points.length > 1) {
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const d = points
      .filter((p) => p[1] !== null && Number.isFinite(p[1]))
      .map((p, i) => `${i ? "L" : "M"}${(((p[0] - t0) / Math.max(1, t1 - t0)) * (W - 4) + 2).toFixed(1)},${(H - 4 - (p[1] / hi) * (H - 8)).toFixed(1)}`)
      .join(" ");
    svg.append(s("path", { d, class: "line" }));
  }
  return h("div", { class: "card spark-card" }, h("div", { class: "muted" }, title), h("div", { class: "big" }, last === null ? "–" : `${sig(last)} ${unit}`), svg);
}

function healthCharts() {
  if (samples.length < 2) return [empty("Collecting samples of /metrics (every 2 s while this view is open)…")];
  const pairs = samples.slice(1).map((cur, i) => [samples[i], cur]);
  const rate = (name, pred) => pairs.map(([a, b]) => [b.t, (total(b.m, name, pred) - total(a.m, name, pred)) / ((b.t - a.t) / 1e3)]);
  const notMetrics = (l) => l.route !== "/metrics";
  return [
    h(
      "div",
      { class: "sparks" },
      sparkline("Requests per second", rate("hippo_http_requests_total", notMetrics), "req/s"),
      sparkline("Latency p50", pairs.map(([a, b]) => [b.t, quantile(a.m, b.m, 0.5)]), "ms"),
      sparkline("Latency p95", pairs.map(([a, b]) => [b.t, quantile(a.m, b.m, 0.95)]), "ms"),
      sparkline("Resident memory", samples.map((x) => [x.t, total(x.m, "hippo_process_resident_memory_bytes") / 2 ** 20]), "MiB"),
      sparkline("LLM tokens per second", pairs.map(([a, b]) => [b.t, ["hippo_llm_prompt_tokens_total", "hippo_llm_completion_tokens_total"].reduce((n, name) => n + (total(b.m, name) - total(a.m, name)), 0) / ((b.t - a.t) / 1e3)]), "tok/s"),
      sparkline("Memories written per second", rate("hippo_memories_written_total"), "/s"),
    ),
  ];
}

function llmTable(m) {
  const ops = [...new Set(m.filter((x) => x.name.startsWith("hippo_llm_")).map((x) => x.labels.operation).filter(Boolean))];
  if (!ops.length) return empty("No LLM calls since the server started.");
  return table(
    ["operation", "calls", "prompt tokens", "answer tokens", "unusable answers"],
    ops.map((op) => [
      op,
      ...["calls", "prompt_tokens", "completion_tokens", "unusable_answers"].map((k) => h("span", { class: "num" }, total(m, `hippo_llm_${k}_total`, (l) => l.operation === op))),
    ]),
    { class: "llm" },
  );
}

async function healthView() {
  const [health, me] = await Promise.all([api("GET", "/healthz"), whoamiInfo()]);
  const parts = [
    h("h1", {}, "Health"),
    fieldList([
      ["status", health.status],
      ["model", health.model],
      ["version", health.version],
    ]),
  ];
  if (!tenantWideAdmin(me)) {
    parts.push(empty("The store's numbers and the server's metrics are shown to tenant-wide admin keys."));
    return parts;
  }
  const [stats] = await Promise.all([api("GET", "/v1/stats"), samples.length ? null : sampleMetrics()]);
  parts.push(
    h("h2", {}, "This tenant's store"),
    fieldList([
      ["memories", `${stats.memories} (${Object.entries(stats.by_kind).map(([k, n]) => `${n} ${k}`).join(", ")})`],
      ["users", String(stats.users)],
      ["vectors", Object.entries(stats.vectors_by_model).map(([k, n]) => `${n} of ${k}`).join(", ") || "none"],
      ["keyword index", `${stats.keyword_entries} entries`],
      ["on disk", stats.disk_bytes == null ? "(Postgres)" : `${(stats.disk_bytes / 2 ** 20).toFixed(1)} MiB`],
      ["jobs", Object.entries(stats.jobs).map(([k, n]) => `${n} ${k}`).join(", ")],
    ]),
  );
  const charts = h("div", { id: "charts" }, healthCharts());
  const llm = h("div", {}, llmTable(samples[samples.length - 1].m));
  parts.push(h("h2", {}, "Server"), charts, h("h2", {}, "LLM use since start"), llm);
  // Sampled while this view is open; only the charts redraw (no layout jump).
  const timer = setInterval(async () => {
    if (route().name !== "health") return clearInterval(timer);
    try {
      await sampleMetrics();
      charts.replaceChildren(...healthCharts());
      llm.replaceChildren(llmTable(samples[samples.length - 1].m));
    } catch (err) {
      charts.replaceChildren(errorBox(err));
    }
  }, SAMPLE_MS);
  poller = timer;
  return parts;
}

// ---- Shell ----

const VIEWS = {
  browse: browseView,
  memories: memoriesView,
  memory: memoryView,
  timeline: timelineView,
  search: searchView,
  governance: governanceView,
  jobs: jobsView,
  job: jobView,
  health: healthView,
};

let rendering = 0;
async function render() {
  const r = route();
  const ticket = ++rendering;
  clearInterval(poller);
  poller = null;
  for (const a of document.querySelectorAll("nav a")) {
    const owner = { memory: "memories", job: "jobs" }[r.name] || r.name;
    if (a.dataset.view === owner) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const fn = VIEWS[r.name];
  let parts;
  try {
    parts = fn ? await fn(r) : [h("h1", {}, "Not found"), empty(`No view named “${r.name}”.`)];
  } catch (err) {
    parts = [h("h1", {}, "Error"), errorBox(err)];
  }
  if (ticket !== rendering) return; // a newer navigation won
  view.replaceChildren(...[parts].flat(Infinity));
  // Wide tables scroll inside their box on a narrow screen, not the page.
  for (const t of view.querySelectorAll("table")) {
    const wrap = h("div", { class: "table-wrap" });
    t.replaceWith(wrap);
    wrap.append(t);
  }
  document.title = `Hippo · ${r.name}`;
  // When the view's content reached the screen, in ms since the page began
  // loading: what the scale test reads as the view's first paint.
  requestAnimationFrame(() => performance.mark("hippo:view-painted", { detail: r.name }));
}

function keyButtonLabel() {
  document.getElementById("key-button").textContent = sessionStorage.getItem(KEY) ? "API key ✓" : "API key";
}

function setupKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-button").addEventListener("click", () => {
    input.value = sessionStorage.getItem(KEY) || "";
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    const key = input.value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
    whoami = null;
    keyButtonLabel();
    render();
  });
  keyButtonLabel();
}

// Keyboard: `/` jumps to the first field of the view, as in most consoles;
// `j`/`k` (or ↓/↑ once a row has focus) move through the rows of the view's
// tables, each row by its first link, which Enter opens.
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, textarea, select, dialog")) return;
  if (e.key === "/") {
    const first = view.querySelector("input, select");
    if (first) {
      e.preventDefault();
      first.focus();
    }
    return;
  }
  const rows = [...view.querySelectorAll("tbody tr")].filter((tr) => tr.querySelector("a"));
  const at = rows.indexOf(document.activeElement?.closest("tr"));
  const step = { j: 1, k: -1, ArrowDown: at < 0 ? 0 : 1, ArrowUp: at < 0 ? 0 : -1 }[e.key];
  if (!step || !rows.length) return;
  e.preventDefault();
  const next = at < 0 ? 0 : Math.max(0, Math.min(rows.length - 1, at + step));
  rows[next].querySelector("a").focus();
  rows[next].scrollIntoView({ block: "nearest" });
});

setupKeyDialog();
window.addEventListener("hashchange", render);
render();
