// Millrace explorer: plain JavaScript on the public read API (/v1/gql, /v1/gql/autocomplete,
// /v1/schema, /v1/info). The read key lives in this tab's sessionStorage and travels only
// as `Authorization: Bearer`; the URL holds the query and range, never the key.

const KEY_SLOT = "millrace.readKey";
const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];
const PRESETS = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
// Bucket widths for the histogram, smallest first: the first giving at most MAX_BUCKETS wins.
const WIDTHS = [
  ["1s", 1e3], ["2s", 2e3], ["5s", 5e3], ["10s", 10e3], ["15s", 15e3], ["30s", 30e3], ["1m", 60e3],
  ["2m", 120e3], ["5m", 300e3], ["10m", 600e3], ["15m", 900e3], ["30m", 1800e3], ["1h", 3600e3],
  ["2h", 7200e3], ["3h", 10800e3], ["6h", 21600e3], ["12h", 43200e3], ["1d", 86400e3], ["7d", 604800e3],
];
const MAX_BUCKETS = 100;
const LIVE_EVERY_MS = 2000;
const LIVE_MAX_ROWS = 500; // the live view keeps the newest this many rows
const FACET_KEYS = 5; // properties whose top values are shown
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem(KEY_SLOT),
  source: "logs",
  q: "",
  range: "1h",
  from: null, // ms, for a custom range
  to: null,
  window: null, // [from, to] ms of the search on screen
  rows: [],
  seen: new Set(),
  exhausted: false,
  schema: null,
  live: null,
  busy: 0,
};

// -- small helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function iso(ms) {
  return new Date(ms).toISOString();
}

function say(text) {
  $("status").textContent = text;
}

function shortTime(ms, span) {
  const d = new Date(ms);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: span < 600e3 ? "2-digit" : undefined, hourCycle: "h23" });
  return span > 86400e3 ? `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hm}` : hm;
}

// A row's time for display: local time with milliseconds (the full value is in its details).
function rowTime(text) {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) return text;
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// The µs after `text` (an RFC 3339 time with up to 9 fraction digits), as ISO 8601: GQL reads
// times to the microsecond, so `timestamp < next` keeps every row of the same microsecond.
function nextMicro(text) {
  const base = Date.parse(text.slice(0, 19) + "Z");
  const frac = (text.slice(20).replace(/\D.*$/, "") + "000000").slice(0, 6);
  const micro = base * 1000 + Number(frac) + 1;
  const ms = Math.floor(micro / 1000);
  return iso(ms).slice(0, 23) + String(micro % 1000).padStart(3, "0") + "Z";
}

// -- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, position) {
    super(message);
    this.status = status;
    this.position = position;
  }
}

async function api(path, body) {
  const init = { headers: { Authorization: `Bearer ${state.key}` }, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  state.busy++;
  document.body.setAttribute("aria-busy", "true");
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  } finally {
    if (--state.busy === 0) document.body.removeAttribute("aria-busy");
  }
  let payload = null;
  try {
    payload = await resp.json();
  } catch {
    /* a non-JSON answer: described by its status below */
  }
  if (resp.ok) return payload;
  const problem = payload && payload.error;
  const message = problem ? problem.message : `the server answered ${resp.status}`;
  if (resp.status === 401) signOut("That key was not accepted (401): check it and sign in again.");
  throw new ApiError(resp.status, message, problem ? problem.position : undefined);
}

// Several GQL queries in one request (at most 10); each answer is {status, data | error, position}.
function batch(queries) {
  return api("/v1/gql", { queries });
}

// -- sign-in ------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const input = $("key");
  const key = input.value.trim();
  $("sign-in-error").textContent = "";
  if (!key) return;
  state.key = key;
  let info;
  try {
    info = await fetch("/v1/info", { headers: { Authorization: `Bearer ${key}` }, cache: "no-store", credentials: "omit" });
  } catch (err) {
    state.key = null;
    $("sign-in-error").textContent = `The server cannot be reached: ${err.message}`;
    return;
  }
  if (!info.ok) {
    state.key = null;
    $("sign-in-error").textContent =
      info.status === 401 ? "Wrong key: the server does not know this key (401)."
      : info.status === 403 ? "This key cannot read: it lacks the data:read scope (403)."
      : `The server answered ${info.status}; try again shortly.`;
    input.select();
    return;
  }
  input.value = "";
  sessionStorage.setItem(KEY_SLOT, key);
  await enter(await info.json());
}

function signOut(message = "") {
  stopLive();
  sessionStorage.removeItem(KEY_SLOT);
  state.key = null;
  state.rows = [];
  state.schema = null;
  for (const id of ["rows", "facets", "aggregate", "histogram-svg", "legend"]) $(id).replaceChildren();
  $("explorer").hidden = true;
  $("sign-out").hidden = true;
  $("project").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("key").focus();
}

async function enter(info) {
  $("sign-in").hidden = true;
  $("explorer").hidden = false;
  $("sign-out").hidden = false;
  $("project").hidden = false;
  $("project").textContent = `project ${info.project.name} · ${info.usage.logs.toLocaleString()} logs`;
  readUrl();
  state.schema = api("/v1/schema").catch(() => null); // facets wait for it
  $("q").focus();
  await search();
}

// -- the query and the URL ----------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.q = params.get("q") || "";
  state.source = params.get("source") === "events" ? "events" : "logs";
  const from = Date.parse(params.get("from") || "");
  const to = Date.parse(params.get("to") || "");
  if (!Number.isNaN(from) && !Number.isNaN(to) && from < to) {
    [state.range, state.from, state.to] = ["custom", from, to];
  } else {
    state.range = PRESETS[params.get("range")] ? params.get("range") : "1h";
  }
  $("q").value = state.q;
  $("source").value = state.source;
  $("range").value = state.range;
  showCustom();
}

function writeUrl() {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.source !== "logs") params.set("source", state.source);
  if (state.range === "custom") {
    params.set("from", iso(state.from));
    params.set("to", iso(state.to));
  } else {
    params.set("range", state.range);
  }
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3);
  return d.toISOString().slice(0, 19);
}

function showCustom() {
  const custom = state.range === "custom";
  $("custom").hidden = !custom;
  $("zoom-out").hidden = !custom;
  if (custom) {
    $("from").value = localInput(state.from);
    $("to").value = localInput(state.to);
  }
}

// The window [from, to) in ms for the range on screen.
function currentWindow() {
  if (state.range === "custom") return [state.from, state.to];
  const now = Date.now();
  return [now - PRESETS[state.range], now];
}

const OWN_TIME = /(^|[\s|(])(last|since|until)\s*:|(^|[\s|])(last\s+\d|between\s)/i;
const OWN_SOURCE = /(^|[\s|])from\s*:?\s*(\w+)/i;

// The page's window and source as a first segment, the user's query, then any stage the page
// adds: `since:… until:… | <q> | count by …`. `offset` maps an error back into what the user typed.
function full(q, window, extra = "") {
  return [head(q, window), q.trim(), extra].filter(Boolean).join(" | ");
}

function head(q, [from, to]) {
  const parts = [];
  if (!OWN_TIME.test(q)) parts.push(`since:${iso(from)} until:${iso(to)}`);
  if (!OWN_SOURCE.test(q) && state.source !== "logs") parts.push(`from:${state.source}`);
  return parts.join(" ");
}

// An error's position in what the user typed (the page's own parts are before and after it).
function userError(answer) {
  let at = answer.position;
  if (at != null) {
    const before = head(state.q, state.window || [0, 1]).length;
    at = Math.max(0, Math.min(state.q.length, at - (before && state.q ? before + 3 : 0)));
  }
  const message = String(answer.error).replace(/\(at position \d+\)$/, at == null ? "" : `(at position ${at})`);
  return [message, at];
}

function firstPipe(q) {
  let quote = null;
  for (let i = 0; i < q.length; i++) {
    const c = q[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "|") return i;
  }
  return -1;
}

function isAggregate(q) {
  return /\|\s*(count|count_distinct)\b/i.test(q) || /^\s*(count|count_distinct)\b/i.test(q);
}

function quoteValue(value) {
  const text = String(value);
  if (/^[^\s"'()|,]+$/.test(text) && !/^[-]/.test(text)) return text;
  return `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

// Words GQL reads as clauses or stages: a property of that name is quoted to stay a field.
const RESERVED = new Set(["from", "last", "since", "until", "between", "not", "and", "or", "count",
  "count_distinct", "top", "sort", "limit", "where", "by", "bin"]);

function quoteField(name) {
  const plain = /^[$A-Za-z_][\w.$-]*$/.test(name) && !RESERVED.has(name.toLowerCase());
  return plain ? name : `"${name.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

// `field:value` (or its negation) added to the query's filters, before any stage.
function addFilter(field, value, negate) {
  const empty = value === "" || value == null;
  const clause = empty
    ? `${negate ? "" : "-"}${quoteField(field)}:*`
    : `${negate ? "-" : ""}${quoteField(field)}:${quoteValue(value)}`;
  const q = $("q").value;
  const pipe = firstPipe(q);
  const head = (pipe < 0 ? q : q.slice(0, pipe)).trimEnd();
  const rest = pipe < 0 ? "" : " " + q.slice(pipe);
  $("q").value = `${head ? head + " " : ""}${clause}${rest}`;
  say(`Added ${clause}`);
  search();
}

// -- search -------------------------------------------------------------------------------

let generation = 0; // answers to an older search are dropped

async function search(event) {
  if (event) event.preventDefault();
  closeSuggestions();
  state.q = $("q").value.trim();
  $("q").value = state.q; // error positions count from the first character
  state.source = $("source").value;
  state.range = $("range").value;
  if (state.range === "custom") {
    const from = Date.parse($("from").value);
    const to = Date.parse($("to").value);
    if (Number.isNaN(from) || Number.isNaN(to) || from >= to) {
      showError("Pick a custom range whose start is before its end.");
      return;
    }
    [state.from, state.to] = [from, to];
  }
  showCustom();
  writeUrl();
  const mine = ++generation;
  const window = currentWindow();
  state.window = window;
  state.rows = [];
  state.seen = new Set();
  state.exhausted = false;
  const aggregate = isAggregate(state.q);
  const queries = [full(state.q, window)];
  if (!aggregate) queries.push(histogramQuery(window));
  const started = performance.now();
  let answers;
  try {
    answers = await batch(queries);
  } catch (err) {
    if (mine === generation) showError(err.message, err.position);
    return;
  }
  if (mine !== generation) return;
  const [main, hist] = answers;
  if (main.status === "error") {
    showError(...userError(main));
    return;
  }
  showError(null);
  const ms = Math.round(performance.now() - started);
  if (main.data.mode === "aggregate") {
    renderAggregate(main.data);
    $("histogram").hidden = true;
    $("facets").replaceChildren();
    $("summary").textContent = `${main.data.total_groups.toLocaleString()} groups · ${ms} ms`;
    return;
  }
  $("aggregate").hidden = true;
  $("rows").replaceChildren();
  addRows(main.data.results, "end");
  state.exhausted = main.data.count < 100; // a search answers at most 100 rows unless it says `limit`
  $("more").hidden = state.exhausted;
  if (hist && hist.status === "ok") renderHistogram(hist.data.results, window);
  else $("histogram").hidden = true;
  $("summary").textContent = summaryText(ms);
  // After the rows, not beside them: on a small machine the facets' scans would delay them.
  await loadFacets(window, mine);
}

function histogramWidth([from, to]) {
  return WIDTHS.find(([, ms]) => (to - from) / ms <= MAX_BUCKETS) || WIDTHS[WIDTHS.length - 1];
}

// Search stages that would cap or reorder the histogram's groups are left out of it.
function filtersOnly(q) {
  return q.replace(/\|\s*(limit\s+\d+|sort\s+[^|]*)/gi, "").trim();
}

function histogramQuery(window) {
  const [width] = histogramWidth(window);
  const by = state.source === "logs" ? `bin(timestamp, ${width}), level` : `bin(timestamp, ${width})`;
  return full(filtersOnly(state.q), window, `count by ${by} | limit 10000`);
}

function summaryText(ms) {
  const total = state.histTotal;
  const shown = state.rows.length.toLocaleString();
  const of = total != null ? ` of ${total.toLocaleString()}` : "";
  return `${shown}${of} ${state.source} shown${ms != null ? ` · ${ms} ms` : ""}`;
}

function showError(message, position) {
  const box = $("query-error");
  const input = $("q");
  if (!message) {
    box.hidden = true;
    input.removeAttribute("aria-invalid");
    return;
  }
  box.hidden = false;
  input.setAttribute("aria-invalid", "true");
  const q = input.value;
  const children = [el("strong", { text: "Query error: " }), message];
  if (position != null) {
    const at = Math.min(position, q.length);
    const mark = el("mark", { text: q.slice(at, at + 1) || " " });
    children.push(el("pre", {}, q.slice(0, at), mark, q.slice(at + 1)));
    input.setSelectionRange(at, at);
  }
  box.replaceChildren(...children);
  $("summary").textContent = "";
}

// -- results ------------------------------------------------------------------------------

function identity(row) {
  return JSON.stringify(row);
}

function addRows(rows, where) {
  const list = $("rows");
  const fresh = [];
  for (const row of rows) {
    const id = identity(row);
    if (state.seen.has(id)) continue;
    state.seen.add(id);
    fresh.push(row);
  }
  if (where === "end") {
    state.rows.push(...fresh);
    list.append(...fresh.map((r) => rowItem(r)));
  } else {
    fresh.sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1));
    state.rows.unshift(...fresh);
    list.prepend(...fresh.map((r) => rowItem(r, true)));
    while (state.rows.length > LIVE_MAX_ROWS) {
      state.seen.delete(identity(state.rows.pop()));
      list.lastElementChild.remove();
    }
  }
  $("empty").hidden = state.rows.length > 0;
  return fresh.length;
}

function rowItem(row, isNew = false) {
  const events = state.source === "events";
  const level = events ? "" : row.level || "";
  const line = el(
    "button",
    { type: "button", class: "line", "aria-expanded": "false" },
    el("time", { datetime: row.timestamp, text: rowTime(row.timestamp) }),
    el("span", { class: `level ${level}`, text: events ? "event" : level }),
    el("span", { class: "svc", text: events ? row.distinct_id || "" : row.service || "" }),
    el("span", { class: "msg", text: events ? row.event : row.message }),
  );
  const item = el("li", { class: isNew ? "new" : "" }, line);
  line.addEventListener("click", () => toggleRow(item, line, row));
  return item;
}

function toggleRow(item, line, row) {
  const open = line.getAttribute("aria-expanded") === "true";
  line.setAttribute("aria-expanded", String(!open));
  if (open) {
    item.querySelector(".detail").remove();
    return;
  }
  const table = el("table", { class: "fields" });
  const map = state.source === "events" ? "properties" : "attributes";
  for (const [name, value] of Object.entries(row)) {
    if (name === map || (Array.isArray(value) && value.length === 0)) continue;
    if (value === "" || value == null) continue;
    table.append(fieldRow(name, value, !UNFILTERABLE.has(name) && !Array.isArray(value)));
  }
  for (const [name, value] of Object.entries(row[map] || {})) table.append(fieldRow(name, value, true, map));
  const copy = el("button", { type: "button", text: "Copy as JSON" });
  copy.addEventListener("click", () => copyJson(row, copy));
  item.append(el("div", { class: "detail" }, el("div", { class: "actions" }, copy), table));
}

// Not a filter GQL offers (the project comes from the key; times take ranges, lists `tags:x`).
const UNFILTERABLE = new Set(["project", "timestamp", "observed_timestamp"]);

function fieldRow(name, value, filterable, group) {
  const label = group ? `${group}.${name}` : name;
  if (Array.isArray(value)) value = value.join(", ");
  if (!filterable) return el("tr", {}, el("th", { scope: "row", text: label }), el("td", { text: String(value) }));
  const field = name;
  const add = el("button", {
    type: "button", class: "val", text: String(value), title: `Filter: ${field}:${value}`,
    "aria-label": `Filter by ${label} ${value}`,
  });
  add.addEventListener("click", () => addFilter(field, value, false));
  const neg = el("button", { type: "button", class: "neg", text: "−", title: `Exclude ${label} ${value}`, "aria-label": `Exclude ${label} ${value}` });
  neg.addEventListener("click", () => addFilter(field, value, true));
  return el("tr", {}, el("th", { scope: "row", text: label }), el("td", {}, add, neg));
}

async function copyJson(row, button) {
  const text = JSON.stringify(row, null, 2);
  try {
    // Some browsers leave the promise pending without a user-visible focus: give up after 1 s.
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000));
    await Promise.race([navigator.clipboard.writeText(text), timeout]);
  } catch {
    const area = el("textarea", { class: "visually-hidden" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  say("Row copied as JSON");
  setTimeout(() => { button.textContent = "Copy as JSON"; }, 1500);
}

// The next page: rows older than the oldest shown. Rows of one batch often share a timestamp,
// so the page asks for the shown rows of the oldest microsecond again plus 100, and drops repeats.
async function loadMore() {
  const oldest = state.rows[state.rows.length - 1];
  if (!oldest) return;
  const mine = generation;
  const micro = oldest.timestamp.slice(0, 26);
  const ties = state.rows.filter((r) => r.timestamp.slice(0, 26) === micro).length;
  const limit = Math.min(1000, ties + 100);
  const extra = `timestamp < ${nextMicro(oldest.timestamp)} | limit ${limit}`;
  $("more").disabled = true;
  try {
    const [answer] = await batch([full(state.q, state.window, extra)]);
    if (mine !== generation) return;
    if (answer.status === "error") {
      showError(...userError(answer));
      return;
    }
    const added = addRows(answer.data.results, "end");
    state.exhausted = answer.data.count < limit || (added === 0 && limit === 1000);
    $("more").hidden = state.exhausted;
    $("summary").textContent = summaryText();
    say(added ? `${added} more rows` : "No more rows");
  } catch (err) {
    showError(err.message, err.position);
  } finally {
    $("more").disabled = false;
  }
}

// -- aggregates ---------------------------------------------------------------------------

function renderAggregate(data) {
  const box = $("aggregate");
  $("rows").replaceChildren();
  $("more").hidden = true;
  $("empty").hidden = data.results.length > 0;
  const groups = data.results.length ? Object.keys(data.results[0]).filter((k) => k !== "value") : [];
  const max = Math.max(1, ...data.results.map((r) => r.value));
  const head = el("tr", {}, ...groups.map((g) => el("th", { scope: "col", text: g })),
    el("th", { scope: "col", text: "value" }), el("th", { scope: "col" }, el("span", { class: "visually-hidden", text: "bar" })));
  const body = data.results.map((r) => {
    const bar = svg("svg", { "aria-hidden": "true", preserveAspectRatio: "none", viewBox: "0 0 100 10" });
    bar.append(svg("rect", { x: 0, y: 0, height: 10, width: (100 * r.value) / max, class: "f-any" }));
    return el("tr", {}, ...groups.map((g) => el("td", { text: r[g] === "" ? "(none)" : String(r[g]) })),
      el("td", { class: "num", text: r.value.toLocaleString() }), el("td", { class: "bar" }, bar));
  });
  box.replaceChildren(el("div", { class: "agg" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...body))));
  box.hidden = false;
}

// -- histogram ----------------------------------------------------------------------------

const hist = { buckets: [], width: 0, window: null, focus: -1, drag: null };

function renderHistogram(results, window) {
  const [, width] = histogramWidth(window);
  const byStart = new Map();
  let total = 0;
  for (const r of results) {
    const start = Date.parse(r.timestamp);
    const bucket = byStart.get(start) || { start, total: 0, levels: {} };
    const level = r.level || "any";
    bucket.levels[level] = (bucket.levels[level] || 0) + r.value;
    bucket.total += r.value;
    total += r.value;
    byStart.set(start, bucket);
  }
  const first = Math.floor(window[0] / width) * width;
  const buckets = [];
  for (let start = first; start < window[1]; start += width) {
    buckets.push(byStart.get(start) || { start, total: 0, levels: {} });
  }
  Object.assign(hist, { buckets, width, window, focus: -1 });
  state.histTotal = total;
  drawHistogram();
  $("histogram").hidden = false;
  const seen = LEVELS.filter((l) => results.some((r) => r.level === l));
  $("legend").replaceChildren(...seen.map((l) => el("li", {}, el("i", { class: `b-${l}` }), l)));
}

function drawHistogram() {
  const node = $("histogram-svg");
  const W = Math.max(node.clientWidth || 800, 200);
  const H = 120;
  const top = 12;
  const bottom = 16;
  node.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const { buckets } = hist;
  const max = Math.max(1, ...buckets.map((b) => b.total));
  const slot = W / buckets.length;
  const scale = (H - top - bottom) / max;
  const parts = [];
  buckets.forEach((b, i) => {
    if (i === hist.focus) parts.push(svg("rect", { class: "cur", x: i * slot, y: 0, width: slot, height: H - bottom }));
    let y = H - bottom;
    for (const level of [...LEVELS, "any"]) {
      const n = b.levels[level];
      if (!n) continue;
      const h = Math.max(1, n * scale);
      y -= h;
      const rect = svg("rect", { class: `f-${level}`, x: i * slot + 0.5, y, width: Math.max(1, slot - 1), height: h });
      rect.append(svg("title"));
      rect.lastChild.textContent = `${shortTime(b.start, hist.width * 2)}: ${n.toLocaleString()} ${level === "any" ? "" : level}`;
      parts.push(rect);
    }
  });
  const span = hist.window[1] - hist.window[0];
  for (let i = 0; i < 5; i++) {
    const x = (i * W) / 5;
    const label = svg("text", { x: x + 2, y: H - 4 });
    label.textContent = shortTime(hist.window[0] + (i * span) / 5, span);
    parts.push(label);
  }
  const peak = svg("text", { x: 2, y: 10 });
  peak.textContent = `${max.toLocaleString()} per ${histogramWidth(hist.window)[0]}`;
  parts.push(peak);
  if (hist.drag) {
    const [a, b] = [Math.min(hist.drag.x0, hist.drag.x1), Math.max(hist.drag.x0, hist.drag.x1)];
    parts.push(svg("rect", { class: "sel", x: a, y: 0, width: Math.max(1, b - a), height: H - bottom }));
  }
  node.replaceChildren(...parts);
  const total = state.histTotal || 0;
  node.setAttribute("aria-label", `Histogram: ${total.toLocaleString()} ${state.source} from ${shortTime(hist.window[0], span)} to ${shortTime(hist.window[1], span)}`);
}

function svgX(event) {
  const node = $("histogram-svg");
  const box = node.getBoundingClientRect();
  const W = Number(node.getAttribute("viewBox").split(" ")[2]);
  return ((event.clientX - box.left) / box.width) * W;
}

function timeAt(x) {
  const W = Number($("histogram-svg").getAttribute("viewBox").split(" ")[2]);
  const slot = W / hist.buckets.length;
  const i = Math.max(0, Math.min(hist.buckets.length - 1, Math.floor(x / slot)));
  return [i, hist.buckets[i].start + ((x - i * slot) / slot) * hist.width];
}

function zoom(from, to) {
  [from, to] = [Math.max(from, 0), Math.max(to, from + 1000)];
  $("range").value = "custom";
  state.range = "custom";
  [state.from, state.to] = [Math.floor(from), Math.ceil(to)];
  showCustom();
  search();
}

function zoomBucket(i) {
  const b = hist.buckets[i];
  if (b) zoom(b.start, b.start + hist.width);
}

function histogramEvents() {
  const node = $("histogram-svg");
  node.addEventListener("pointerdown", (e) => {
    if (!hist.buckets.length) return;
    node.setPointerCapture(e.pointerId);
    hist.drag = { x0: svgX(e), x1: svgX(e) };
  });
  node.addEventListener("pointermove", (e) => {
    if (!hist.drag) return;
    hist.drag.x1 = svgX(e);
    drawHistogram();
  });
  node.addEventListener("pointerup", () => {
    const drag = hist.drag;
    hist.drag = null;
    if (!drag) return;
    if (Math.abs(drag.x1 - drag.x0) < 4) {
      zoomBucket(timeAt(drag.x0)[0]);
      return;
    }
    const [, a] = timeAt(Math.min(drag.x0, drag.x1));
    const [, b] = timeAt(Math.max(drag.x0, drag.x1));
    zoom(a, b);
  });
  node.addEventListener("keydown", (e) => {
    if (!hist.buckets.length) return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const step = e.key === "ArrowRight" ? 1 : -1;
      hist.focus = Math.max(0, Math.min(hist.buckets.length - 1, (hist.focus < 0 ? hist.buckets.length : hist.focus) + step));
      const b = hist.buckets[hist.focus];
      say(`${shortTime(b.start, hist.width * 2)}: ${b.total.toLocaleString()} ${state.source}`);
      drawHistogram();
      e.preventDefault();
    } else if (e.key === "Enter" && hist.focus >= 0) {
      zoomBucket(hist.focus);
    }
  });
  new ResizeObserver(() => hist.buckets.length && drawHistogram()).observe(node);
}

function zoomOut() {
  const [from, to] = state.window;
  const span = to - from;
  zoom(from - span / 2, Math.min(Date.now(), to + span / 2));
}

// -- facets -------------------------------------------------------------------------------

const FACETS = {
  logs: [["level", "Levels"], ["service", "Services"], ["environment", "Environments"]],
  events: [["event", "Events"], ["$browser", "Browsers"], ["$os", "Systems"]],
};

// Property names GQL reads as the columns above (or as the message): not offered twice.
const SHOWN = {
  logs: new Set(["level", "severity", "service", "environment", "env", "message", "body"]),
  events: new Set(["event", "event_name", "name", "$browser", "$os"]),
};

async function loadFacets(window, mine) {
  const fixed = FACETS[state.source];
  const schema = (await state.schema) || {};
  const props = (schema[state.source === "logs" ? "log_properties" : "event_properties"] || [])
    .filter((p) => !SHOWN[state.source].has(p.key.toLowerCase()))
    .slice(0, FACET_KEYS);
  const fields = [...fixed, ...props.map((p) => [p.key, p.key])];
  const base = filtersOnly(state.q);
  const queries = fields.map(([f]) => full(base, window, `count by ${quoteField(f)} | top 8`));
  let answers;
  try {
    answers = await batch(queries);
  } catch {
    return;
  }
  if (mine !== generation) return;
  const sections = [];
  fields.forEach(([field, title], i) => {
    const answer = answers[i];
    if (answer.status !== "ok" || !answer.data.results.length) return;
    const name = answer.data.results[0] ? Object.keys(answer.data.results[0]).find((k) => k !== "value") : field;
    const items = answer.data.results.map((r) => {
      const value = r[name];
      const shown = value === "" ? "(none)" : String(value);
      const add = el("button", { type: "button", class: "v", text: shown, title: `Filter: ${field}:${shown}` });
      add.addEventListener("click", () => addFilter(field, value, false));
      const neg = el("button", { type: "button", class: "x", text: "−", "aria-label": `Exclude ${field} ${shown}`, title: `Exclude ${shown}` });
      neg.addEventListener("click", () => addFilter(field, value, true));
      return el("li", {}, add, el("span", { class: "n", text: r.value.toLocaleString() }), neg);
    });
    const more = answer.data.total_groups > items.length ? el("li", { class: "n", text: `${answer.data.total_groups - items.length} more` }) : null;
    sections.push(el("section", { "aria-label": title }, el("h3", { text: title }), el("ul", {}, ...items, more)));
  });
  $("facets").replaceChildren(...sections);
}

// -- live tail ----------------------------------------------------------------------------

function startLive() {
  const since = state.rows.reduce((m, r) => (r.observed_timestamp > m ? r.observed_timestamp : m), "");
  state.live = {
    cursor: since || iso(Date.now() - 30e3),
    paused: false,
    timer: null,
    polls: 0,
    arrivals: [], // [ms, n] for the logs/s counter over the last 10 s
  };
  $("live").setAttribute("aria-pressed", "true");
  $("pause").hidden = false;
  $("rate").hidden = false;
  $("rate").textContent = "0.0 logs/s";
  poll();
}

function stopLive() {
  if (!state.live) return;
  clearTimeout(state.live.timer);
  state.live = null;
  $("live").setAttribute("aria-pressed", "false");
  $("pause").hidden = true;
  $("pause").setAttribute("aria-pressed", "false");
  $("pause").textContent = "Pause";
  $("rate").hidden = true;
}

function schedule() {
  const live = state.live;
  if (!live) return;
  clearTimeout(live.timer);
  if (live.paused || document.hidden) return; // resumed by the pause button or visibilitychange
  live.timer = setTimeout(poll, LIVE_EVERY_MS);
}

// New rows by receive time: a window that overlaps the last one (late batches land in it),
// and duplicates are dropped by identity; at most 200 rows a poll, 500 kept on screen.
async function poll() {
  const live = state.live;
  if (!live || live.paused || document.hidden || isAggregate(state.q)) return schedule();
  const cursor = live.cursor;
  const overlap = iso(Date.parse(cursor) - 10e3);
  const now = Date.now();
  const window = [now - PRESETS["7d"], now + 60e3];
  try {
    const queries = [full(filtersOnly(state.q), window, `observed_timestamp >= ${overlap} | limit 200`)];
    if (++live.polls % 5 === 0 && state.range !== "custom") queries.push(histogramQuery(currentWindow()));
    const [answer, histAnswer] = await batch(queries);
    if (state.live !== live) return;
    if (answer.status === "error") {
      showError(...userError(answer));
    } else {
      const added = addRows(answer.data.results, "start");
      for (const r of answer.data.results) if (r.observed_timestamp > live.cursor) live.cursor = r.observed_timestamp;
      live.arrivals.push([now, added]);
      live.arrivals = live.arrivals.filter(([t]) => now - t <= 10e3);
      const span = Math.max(LIVE_EVERY_MS, now - live.arrivals[0][0] + LIVE_EVERY_MS) / 1000;
      const rate = live.arrivals.reduce((s, [, n]) => s + n, 0) / span;
      $("rate").textContent = `${rate.toFixed(1)} logs/s`;
      if (added) $("summary").textContent = summaryText();
    }
    if (histAnswer && histAnswer.status === "ok") {
      state.window = currentWindow();
      renderHistogram(histAnswer.data.results, state.window);
    }
  } catch (err) {
    if (err.status === 401) return;
    $("rate").textContent = `paused: ${err.message}`;
  }
  schedule();
}

function togglePause() {
  const live = state.live;
  if (!live) return;
  live.paused = !live.paused;
  $("pause").setAttribute("aria-pressed", String(live.paused));
  $("pause").textContent = live.paused ? "Resume" : "Pause";
  if (!live.paused) poll();
  else clearTimeout(live.timer);
}

// -- autocomplete -------------------------------------------------------------------------

const combo = { items: [], active: -1, timer: null, asked: 0 };
const WORD_BREAK = " \t\r\n(|";

function closeSuggestions() {
  combo.items = [];
  combo.active = -1;
  $("suggestions").hidden = true;
  $("suggestions").replaceChildren();
  $("q").setAttribute("aria-expanded", "false");
  $("q").removeAttribute("aria-activedescendant");
}

async function askSuggestions() {
  const input = $("q");
  const q = input.value;
  const cursor = input.selectionStart ?? q.length;
  const mine = ++combo.asked;
  let answer;
  try {
    answer = await api(`/v1/gql/autocomplete?${new URLSearchParams({ q, cursor })}`);
  } catch {
    return;
  }
  if (mine !== combo.asked || document.activeElement !== input) return;
  combo.items = answer.suggestions || [];
  combo.active = -1;
  const list = $("suggestions");
  list.replaceChildren(...combo.items.map((s, i) => {
    const li = el("li", { id: `suggestion-${i}`, role: "option", "aria-selected": "false" },
      el("span", { class: "mono", text: s.text }), el("span", { class: "hint", text: s.description }));
    li.addEventListener("mousedown", (e) => { e.preventDefault(); accept(i); });
    return li;
  }));
  list.hidden = combo.items.length === 0;
  input.setAttribute("aria-expanded", String(!list.hidden));
}

function accept(i) {
  const s = combo.items[i];
  const input = $("q");
  if (!s) return;
  const q = input.value;
  const cursor = input.selectionStart ?? q.length;
  let start = cursor;
  while (start > 0 && !WORD_BREAK.includes(q[start - 1])) start--;
  let end = cursor;
  while (end < q.length && !WORD_BREAK.includes(q[end])) end++;
  if (s.kind === "value") {
    const op = q.slice(start, cursor).match(/^-?[^:=<>!]+?(:|!=|>=|<=|==|=|>|<)/);
    if (op) start += op[0].length;
  }
  const text = s.text + (s.kind === "value" ? " " : "");
  input.value = q.slice(0, start) + text + q.slice(end);
  const at = start + text.length;
  input.setSelectionRange(at, at);
  closeSuggestions();
  if (!/[: (]$/.test(text)) return;
  askSuggestions();
}

function moveActive(step) {
  if (!combo.items.length) return;
  combo.active = (combo.active + step + combo.items.length) % combo.items.length;
  [...$("suggestions").children].forEach((li, i) => li.setAttribute("aria-selected", String(i === combo.active)));
  $("q").setAttribute("aria-activedescendant", `suggestion-${combo.active}`);
  $(`suggestion-${combo.active}`).scrollIntoView({ block: "nearest" });
}

function comboEvents() {
  const input = $("q");
  input.addEventListener("input", () => {
    clearTimeout(combo.timer);
    combo.timer = setTimeout(askSuggestions, 150);
  });
  input.addEventListener("keydown", (e) => {
    const open = !$("suggestions").hidden;
    if (e.key === "ArrowDown" && open) { moveActive(1); e.preventDefault(); }
    else if (e.key === "ArrowUp" && open) { moveActive(-1); e.preventDefault(); }
    else if ((e.key === "Enter" || e.key === "Tab") && open && combo.active >= 0) { accept(combo.active); e.preventDefault(); }
    else if (e.key === "Escape" && open) { closeSuggestions(); e.preventDefault(); }
    else if (e.key === " " && e.ctrlKey) { askSuggestions(); e.preventDefault(); }
  });
  input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
}

// -- wiring -------------------------------------------------------------------------------

function main() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  $("search").addEventListener("submit", search);
  $("range").addEventListener("change", () => {
    if ($("range").value === "custom" && state.window) [state.from, state.to] = state.window;
    state.range = $("range").value;
    showCustom();
    if (state.range !== "custom") search();
  });
  $("source").addEventListener("change", () => search());
  $("more").addEventListener("click", loadMore);
  $("zoom-out").addEventListener("click", zoomOut);
  $("live").addEventListener("click", () => (state.live ? stopLive() : startLive()));
  $("pause").addEventListener("click", togglePause);
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.live) poll(); });
  comboEvents();
  histogramEvents();
  if (state.key) {
    api("/v1/info").then(enter).catch((err) => signOut(err.status === 401 ? "" : err.message));
  } else {
    signOut();
  }
}

main();
