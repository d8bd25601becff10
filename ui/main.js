// The console's screens: connect, settlement history, one settlement's detail, statistics, and the
// action dialog. Every call goes through a Rust command; the token never comes back from it.
import { invoke } from "./tauri.js";
import {
  currentLanguage, formatCount, formatDate, formatInstant, formatMinor, formatRate,
  setCurrencyExponents, setLanguage, t,
} from "./i18n.js";

const $ = (id) => document.getElementById(id);
const PER_PAGE = 20;
const LINES_PER_PAGE = 25;
/** How often and how long an action dialog polls a run it started. */
const POLL_MS = 500;
const POLL_LIMIT_MS = 120000;

const state = {
  history: { page: 1, hasMore: false },
  detail: null, // { date, revision, view }
  lines: { page: 1, sort: "merchant_id", order: "asc", search: "", total: 0 },
  action: null, // { kind, date, key }
};

// --- small DOM helpers -------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function chip(status) {
  const span = document.createElement("span");
  span.className = `chip chip-${status}`;
  span.dataset.status = status;
  span.textContent = t(`status.${status}`);
  return span;
}

function showMessage(text, kind = "info") {
  const box = $("app-message");
  box.textContent = text;
  box.className = `message message-${kind}`;
  box.hidden = !text;
}

/** The words for an error; a 401 also goes back to the connect screen. */
function describe(error) {
  switch (error?.type) {
    case "unreachable": return t("state.unreachable");
    case "timeout": return t("state.timeout");
    case "forbidden": return t("state.forbidden");
    default: return error?.message ?? String(error);
  }
}

function handleUnauthorized(error) {
  if (error?.type === "unauthorized" || error?.type === "not_connected") {
    showConnect(t("connect.expired"));
    return true;
  }
  return false;
}

/** Loading, empty and error states of a view: `stateBox` says which, `body` shows when ready. */
function setState(stateBox, body, kind, text, retry) {
  stateBox.replaceChildren();
  stateBox.className = `state state-${kind}`;
  stateBox.dataset.state = kind;
  if (body) body.hidden = kind !== "ready";
  if (kind === "ready") return;
  const p = document.createElement("p");
  p.textContent = text;
  stateBox.append(p);
  if (kind === "error" && retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = t("state.retry");
    button.addEventListener("click", retry);
    stateBox.append(button);
  }
}

async function load(stateBox, body, task, retry) {
  setState(stateBox, body, "loading", t("state.loading"));
  try {
    const result = await task();
    return result;
  } catch (error) {
    if (!handleUnauthorized(error)) setState(stateBox, body, "error", describe(error), retry);
    return undefined;
  }
}

// --- connect -----------------------------------------------------------------------------------

function showConnect(message) {
  $("app-screen").hidden = true;
  $("connect-screen").hidden = false;
  const errorBox = $("connect-error");
  errorBox.textContent = message ?? "";
  errorBox.hidden = !message;
  $(message ? "token" : "server-url").focus();
}

function showApp(connection) {
  $("connected-server").textContent = connection.server_url;
  $("connected-keyring").textContent = connection.keyring;
  $("connect-screen").hidden = true;
  $("app-screen").hidden = false;
  showView("history");
  loadHistory();
}

async function connect(event) {
  event.preventDefault();
  const button = $("connect-button");
  const errorBox = $("connect-error");
  errorBox.hidden = true;
  button.disabled = true;
  button.textContent = t("connect.connecting");
  try {
    const connection = await invoke("connect", {
      server_url: $("server-url").value,
      token: $("token").value,
    });
    $("token").value = "";
    showApp(connection);
  } catch (error) {
    errorBox.textContent = describe(error);
    errorBox.hidden = false;
    (["invalid_token", "unauthorized"].includes(error?.type) ? $("token") : $("server-url")).focus();
  } finally {
    button.disabled = false;
    button.textContent = t("connect.button");
  }
}

async function signOut() {
  try {
    await invoke("sign_out");
    showConnect();
  } catch (error) {
    showMessage(describe(error), "error");
  }
}

// --- views -------------------------------------------------------------------------------------

function showView(name) {
  for (const view of ["history", "detail", "statistics"]) {
    $(`${view}-view`).hidden = view !== name;
  }
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === name || (name === "detail" && tab.dataset.view === "history"));
  }
  showMessage("");
}

// --- history -----------------------------------------------------------------------------------

async function loadHistory() {
  const filter = {
    status: $("history-status").value,
    from: $("history-from").value,
    to: $("history-to").value,
    page: state.history.page,
    per_page: PER_PAGE,
  };
  const page = await load($("history-state"), $("history-table"), () => invoke("history", { filter }), loadHistory);
  if (!page) return;
  state.history.hasMore = page.has_more;
  const rows = page.items.map((settlement) => {
    const tr = row(
      cell(formatDate(settlement.settlement_date)),
      cell(formatCount(settlement.revision)),
      (() => { const td = cell(""); td.append(chip(settlement.status)); return td; })(),
      cell(t(`trigger.${settlement.trigger}`)),
      cell(settlement.totals.map((total) => formatMinor(total.net_minor, total.currency)).join(" · ") || "—", "amount"),
      cell(formatInstant(settlement.completed_at, settlement.calendar.timezone)),
    );
    tr.className = "clickable";
    tr.tabIndex = 0;
    tr.dataset.date = settlement.settlement_date;
    tr.addEventListener("click", () => openDetail(settlement.settlement_date));
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter") openDetail(settlement.settlement_date); });
    return tr;
  });
  $("history-rows").replaceChildren(...rows);
  $("history-page").textContent = t("pager.page", { page: formatCount(page.page) });
  $("history-previous").disabled = page.page <= 1;
  $("history-next").disabled = !page.has_more;
  if (rows.length === 0) {
    setState($("history-state"), $("history-table"), "empty", t("history.empty"));
  } else {
    setState($("history-state"), $("history-table"), "ready");
  }
}

// --- detail ------------------------------------------------------------------------------------

async function openDetail(date, revision) {
  showView("detail");
  state.detail = { date, revision: revision ?? null, view: null };
  state.lines = { page: 1, sort: "merchant_id", order: "asc", search: "", total: 0 };
  $("lines-search").value = "";
  $("changes").hidden = true;
  await loadDetail();
}

async function loadDetail() {
  const { date, revision } = state.detail;
  const view = await load($("detail-state"), $("detail-body"),
    () => invoke("settlement", { date, revision }), loadDetail);
  if (!view) return;
  state.detail.view = view;
  state.detail.revision = view.settlement.revision;
  renderDetail(view);
  setState($("detail-state"), $("detail-body"), "ready");
  await Promise.all([loadLines(), loadAudit()]);
}

function renderDetail(view) {
  const settlement = view.settlement;
  const tz = settlement.calendar.timezone;
  $("detail-title").textContent = t("detail.title", { date: formatDate(settlement.settlement_date) });
  const status = $("detail-status");
  status.className = `chip chip-${settlement.status}`;
  status.dataset.status = settlement.status;
  status.textContent = t(`status.${settlement.status}`);
  $("detail-facts").textContent = t("detail.facts", {
    revision: formatCount(settlement.revision),
    trigger: t(`trigger.${settlement.trigger}`),
    by: settlement.requested_by,
    tz,
    fees: settlement.fee_schedule.default.percent ? `${settlement.fee_schedule.default.percent} %` : "—",
  });
  const latest = view.revisions.at(-1);
  $("retry-button").hidden = !(latest && latest.status === "failed");
  $("rerun-button").hidden = !(latest && latest.status === "completed");
  $("export-button").disabled = settlement.status !== "completed";

  const select = $("detail-revision");
  select.replaceChildren(...view.revisions.map((r) => {
    const option = document.createElement("option");
    option.value = String(r.revision);
    option.textContent = `${formatCount(r.revision)} — ${t(`status.${r.status}`)}`;
    return option;
  }));
  select.value = String(settlement.revision);

  const totals = settlement.totals.map((total) => row(
    cell(total.currency),
    cell(formatCount(total.merchant_count)),
    cell(formatCount(total.transaction_count)),
    cell(formatMinor(total.gross_minor, total.currency), "amount"),
    cell(formatMinor(total.refunds_minor, total.currency), "amount"),
    cell(formatMinor(total.fees_minor, total.currency), "amount"),
    cell(formatMinor(total.net_minor, total.currency), "amount"),
  ));
  $("totals-rows").replaceChildren(...(totals.length ? totals : [emptyRow(7, t("detail.no_totals"))]));

  $("revisions-rows").replaceChildren(...view.revisions.map((r) => {
    const compare = cell("");
    if (r.revision > 1) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary small";
      button.textContent = t("revisions.compare");
      button.dataset.revision = String(r.revision);
      button.addEventListener("click", () => showChanges(r.revision));
      compare.append(button);
    }
    const statusCell = cell("");
    statusCell.append(chip(r.status));
    return row(cell(formatCount(r.revision)), statusCell, cell(r.reason ?? "—"), cell(r.requested_by),
      cell(formatInstant(r.completed_at, tz)), compare);
  }));

  const payouts = view.payouts.map((p) => row(
    cell(p.merchant_id), cell(formatCount(p.revision)), cell(formatMinor(p.amount_minor, p.currency), "amount"),
    cell(t(`payout.${p.status}`)), cell(formatCount(p.attempts)), cell(p.reference, "mono"),
  ));
  $("payouts-rows").replaceChildren(...(payouts.length ? payouts : [emptyRow(6, t("detail.no_payouts"))]));
}

function emptyRow(span, text) {
  const td = cell(text, "muted");
  td.colSpan = span;
  return row(td);
}

async function loadLines() {
  const { date, revision } = state.detail;
  const filter = {
    revision,
    sort: state.lines.sort,
    order: state.lines.order,
    search: state.lines.search,
    page: state.lines.page,
    per_page: LINES_PER_PAGE,
  };
  try {
    const page = await invoke("lines", { date, filter });
    state.lines.total = page.total;
    const rows = page.items.map((line) => row(
      cell(line.merchant_id), cell(line.currency), cell(formatCount(line.transaction_count)),
      cell(formatMinor(line.gross_minor, line.currency), "amount"),
      cell(formatMinor(line.fees_minor, line.currency), "amount"),
      cell(formatMinor(line.net_minor, line.currency), "amount"),
    ));
    $("lines-rows").replaceChildren(...(rows.length ? rows : [emptyRow(6, t("detail.no_lines"))]));
    $("lines-count").textContent = t("lines.count", { total: formatCount(page.total) });
    $("lines-page").textContent = t("pager.page", { page: formatCount(page.page) });
    $("lines-previous").disabled = page.page <= 1;
    $("lines-next").disabled = page.page * page.per_page >= page.total;
    for (const button of document.querySelectorAll("#lines-table .sort")) {
      const active = button.dataset.sort === state.lines.sort;
      button.closest("th").setAttribute("aria-sort", active ? (state.lines.order === "asc" ? "ascending" : "descending") : "none");
    }
  } catch (error) {
    if (!handleUnauthorized(error)) $("lines-rows").replaceChildren(emptyRow(6, t("detail.error", { error: describe(error) })));
  }
}

async function loadAudit() {
  try {
    const audit = await invoke("audit_for_date", { date: state.detail.date });
    const tz = state.detail.view.settlement.calendar.timezone;
    const rows = audit.events.map((e) => row(
      cell(formatInstant(e.occurred_at, tz)), cell(e.actor), cell(e.action), cell(e.subject, "mono"),
      cell(t(`outcome.${e.outcome}`)),
    ));
    $("audit-rows").replaceChildren(...(rows.length ? rows : [emptyRow(5, t("detail.no_audit"))]));
    $("audit-note").textContent = audit.complete ? t("audit.complete") : t("audit.partial", { scanned: formatCount(audit.scanned) });
  } catch (error) {
    if (!handleUnauthorized(error)) $("audit-rows").replaceChildren(emptyRow(5, t("detail.error", { error: describe(error) })));
  }
}

async function showChanges(revision) {
  const box = $("changes");
  box.hidden = false;
  $("changes-title").textContent = t("changes.title", { after: formatCount(revision), before: formatCount(revision - 1) });
  $("changes-facts").textContent = t("state.loading");
  $("changes-rows").replaceChildren();
  try {
    const changes = await invoke("revision_changes", { date: state.detail.date, revision });
    $("changes-facts").textContent = t("changes.facts", {
      reason: changes.reason ?? "—",
      fees: t(changes.fee_schedule_changed ? "changes.fees_changed" : "changes.fees_same"),
    });
    const rows = changes.lines.map((c) => row(
      cell(c.merchant_id), cell(c.currency),
      cell(formatMinor(c.net.before_minor, c.currency), "amount"),
      cell(formatMinor(c.net.after_minor, c.currency), "amount"),
      cell(formatMinor(c.net.delta_minor, c.currency), "amount delta"),
    ));
    $("changes-rows").replaceChildren(...(rows.length ? rows : [emptyRow(5, t("changes.none"))]));
  } catch (error) {
    if (!handleUnauthorized(error)) $("changes-facts").textContent = describe(error);
  }
}

// --- statistics --------------------------------------------------------------------------------

async function loadStatistics(event) {
  event?.preventDefault();
  const from = $("statistics-from").value;
  const to = $("statistics-to").value;
  const stats = await load($("statistics-state"), $("statistics-body"),
    () => invoke("statistics", { from, to }), loadStatistics);
  if (!stats) return;
  if (stats.summary.currencies.length === 0) {
    setState($("statistics-state"), $("statistics-body"), "empty", t("statistics.empty"));
    return;
  }
  $("summary-rows").replaceChildren(...stats.summary.currencies.map((c) => row(
    cell(c.currency), cell(formatCount(c.days)),
    cell(formatMinor(c.gross_minor, c.currency), "amount"),
    cell(formatMinor(c.fees_minor, c.currency), "amount"),
    cell(formatMinor(c.net_minor, c.currency), "amount"),
    cell(formatRate(c.success_rate)),
  )));
  // Charts arrive as PNG data: URLs drawn by core; never markup injected into the page.
  for (const [id, url, caption] of [
    ["chart-daily", stats.daily_chart, "statistics.daily"],
    ["chart-success", stats.success_rate_chart, "statistics.success"],
    ["chart-top", stats.top_merchants_chart, "statistics.top"],
  ]) {
    const image = $(id);
    image.closest("figure").hidden = !url;
    if (url) {
      image.src = url;
      image.alt = t(caption);
    }
  }
  setState($("statistics-state"), $("statistics-body"), "ready");
}

// --- actions -----------------------------------------------------------------------------------

/** Opens the action dialog with a fresh Idempotency-Key: a double click sends the same key twice. */
async function openAction(kind) {
  const date = state.detail?.date ?? "";
  let key;
  try {
    key = await invoke("new_action_key");
  } catch (error) {
    showMessage(describe(error), "error");
    return;
  }
  state.action = { kind, date, key };
  const shownDate = date ? formatDate(date) : "";
  $("action-title").textContent = t(`${kind}.title`, { date: shownDate });
  $("action-text").textContent = t(`${kind}.text`, { date: shownDate });
  $("action-submit").textContent = t(`${kind}.submit`);
  $("action-submit").disabled = false;
  $("action-date-row").hidden = kind !== "trigger";
  $("action-rerun-fields").hidden = kind !== "rerun";
  $("action-date").value = "";
  $("action-reason").value = "";
  $("action-current-fees").checked = false;
  $("action-confirm").checked = false;
  $("action-progress").hidden = true;
  $("action-error").hidden = true;
  $("action-dialog").showModal();
}

async function submitAction(event) {
  event.preventDefault();
  const action = state.action;
  if (!action) return;
  const errorBox = $("action-error");
  errorBox.hidden = true;
  if (action.kind === "rerun") {
    if (!$("action-reason").value.trim()) {
      errorBox.textContent = t("rerun.need_reason");
      errorBox.hidden = false;
      $("action-reason").focus();
      return;
    }
    if (!$("action-confirm").checked) {
      errorBox.textContent = t("rerun.need_confirm");
      errorBox.hidden = false;
      return;
    }
  }
  const submit = $("action-submit");
  submit.disabled = true;
  const progress = $("action-progress");
  progress.hidden = false;
  progress.textContent = t("state.loading");
  try {
    let accepted;
    if (action.kind === "trigger") {
      accepted = await invoke("trigger", { date: $("action-date").value, key: action.key });
    } else if (action.kind === "retry") {
      accepted = await invoke("retry", { date: action.date, key: action.key });
    } else {
      const outcome = await invoke("rerun", {
        date: action.date,
        reason: $("action-reason").value,
        apply_current_fees: $("action-current-fees").checked,
        key: action.key,
      });
      if (outcome.outcome === "awaiting_approval") {
        progress.textContent = t("rerun.awaiting");
        submit.disabled = true;
        return;
      }
      accepted = outcome;
    }
    const settlement = await followRun(accepted.settlement, progress);
    $("action-dialog").close();
    state.action = null;
    const message = t("action.done", {
      revision: formatCount(settlement.revision),
      date: formatDate(settlement.settlement_date),
      status: t(`status.${settlement.status}`),
    });
    showMessage(accepted.replayed ? `${message} ${t("action.replayed")}` : message,
      settlement.status === "failed" ? "error" : "info");
    await openDetail(settlement.settlement_date, settlement.revision);
    showMessage(accepted.replayed ? `${message} ${t("action.replayed")}` : message,
      settlement.status === "failed" ? "error" : "info");
  } catch (error) {
    if (handleUnauthorized(error)) {
      $("action-dialog").close();
      return;
    }
    progress.hidden = true;
    errorBox.textContent = describe(error);
    errorBox.hidden = false;
    // The same key stays: submitting again is safe and answers the first outcome.
    submit.disabled = false;
  }
}

/** Polls the run the daemon continues in the background until it completes or fails. */
async function followRun(settlement, progress) {
  const deadline = Date.now() + POLL_LIMIT_MS;
  let current = settlement;
  while (current.status === "running" && Date.now() < deadline) {
    progress.textContent = t("action.running", { revision: formatCount(current.revision) });
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const view = await invoke("settlement", { date: current.settlement_date, revision: current.revision });
    current = view.settlement;
  }
  return current;
}

/**
 * "Export CSV…": the console opens the native save dialog itself (`choose_export_path`) and
 * `export_csv` writes only to the path that dialog answered, once.
 */
async function exportCsv() {
  const { date, revision } = state.detail;
  let path;
  try {
    path = await invoke("choose_export_path", {
      date,
      revision,
      title: t("export.title", { date: formatDate(date) }),
    });
  } catch (error) {
    if (!handleUnauthorized(error)) showMessage(describe(error), "error");
    return;
  }
  if (!path) {
    showMessage(t("export.cancelled"));
    return;
  }
  await exportTo(path);
}

/** Writes the export to `path`, the save dialog's answer. */
async function exportTo(path) {
  const { date, revision } = state.detail;
  const button = $("export-button");
  button.disabled = true;
  showMessage(t("export.saving"));
  try {
    const saved = await invoke("export_csv", { date, revision, bom: false, path });
    showMessage(t("export.saved", { bytes: formatCount(saved.bytes), path: saved.path }));
  } catch (error) {
    if (!handleUnauthorized(error)) showMessage(describe(error), "error");
  } finally {
    button.disabled = false;
  }
}

// --- language ----------------------------------------------------------------------------------

async function changeLanguage(code) {
  setLanguage(code);
  try {
    await invoke("set_language", { language: code });
  } catch (error) {
    showMessage(describe(error), "error");
  }
  // Re-render what is on screen with the new words, digits and dates.
  if (!$("app-screen").hidden) {
    if (!$("history-view").hidden) loadHistory();
    if (!$("detail-view").hidden && state.detail?.view) {
      renderDetail(state.detail.view);
      loadLines();
      loadAudit();
    }
    if (!$("statistics-view").hidden && !$("statistics-body").hidden) loadStatistics();
  }
}

// --- wiring ------------------------------------------------------------------------------------

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function wire() {
  $("connect-form").addEventListener("submit", connect);
  $("sign-out-button").addEventListener("click", signOut);
  for (const select of document.querySelectorAll(".language-select")) {
    select.addEventListener("change", () => changeLanguage(select.value));
  }
  $("nav-history").addEventListener("click", () => { showView("history"); loadHistory(); });
  $("nav-statistics").addEventListener("click", () => showView("statistics"));
  $("history-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    state.history.page = 1;
    loadHistory();
  });
  $("history-previous").addEventListener("click", () => { state.history.page -= 1; loadHistory(); });
  $("history-next").addEventListener("click", () => { state.history.page += 1; loadHistory(); });
  $("detail-back").addEventListener("click", () => { showView("history"); loadHistory(); });
  $("detail-revision").addEventListener("change", () => {
    openDetail(state.detail.date, Number($("detail-revision").value));
  });
  let searchTimer;
  $("lines-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.lines.search = $("lines-search").value;
      state.lines.page = 1;
      loadLines();
    }, 250);
  });
  for (const button of document.querySelectorAll("#lines-table .sort")) {
    button.addEventListener("click", () => {
      const sort = button.dataset.sort;
      state.lines.order = state.lines.sort === sort && state.lines.order === "asc" ? "desc" : "asc";
      state.lines.sort = sort;
      state.lines.page = 1;
      loadLines();
    });
  }
  $("lines-previous").addEventListener("click", () => { state.lines.page -= 1; loadLines(); });
  $("lines-next").addEventListener("click", () => { state.lines.page += 1; loadLines(); });
  $("statistics-filter").addEventListener("submit", loadStatistics);
  $("trigger-button").addEventListener("click", () => { state.detail = null; openAction("trigger"); });
  $("rerun-button").addEventListener("click", () => openAction("rerun"));
  $("retry-button").addEventListener("click", () => openAction("retry"));
  $("export-button").addEventListener("click", exportCsv);
  $("action-form").addEventListener("submit", submitAction);
  $("action-cancel").addEventListener("click", () => { $("action-dialog").close(); state.action = null; });

  const today = new Date();
  $("statistics-to").value = isoDay(today);
  $("statistics-from").value = isoDay(new Date(today.getTime() - 30 * 86400000));
}

async function start() {
  wire();
  try {
    const startup = await invoke("startup");
    setCurrencyExponents(startup.currency_exponents);
    setLanguage(startup.preferences.language);
    if (startup.preferences.server_url) $("server-url").value = startup.preferences.server_url;
    if (startup.connection) {
      showApp(startup.connection);
      return;
    }
  } catch (error) {
    setLanguage(currentLanguage());
    $("connect-error").textContent = describe(error);
    $("connect-error").hidden = false;
  }
  showConnect();
}

start();
