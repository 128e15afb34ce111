// The live page: the list follows /ui/stream (server-sent events); a
// selected order shows its saga's timeline and graph, reloaded whenever
// the stream says that its saga moved.
"use strict";

const $ = (sel) => document.querySelector(sel);
let selected = "";     // the id of the order shown in #detail
let shownUpdate = "";  // its saga's updated_at when last loaded
let rows = [];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function money(cents) { return (cents / 100).toFixed(2); }

function time(t) { return new Date(t).toISOString().substring(11, 23); }

function renderList() {
  const body = $("#orders tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", { "data-id": r.id, "data-state": r.state },
      el("td", { class: "id" }, el("code", {}, r.id.substring(0, 8) + "…" + r.id.substring(r.id.length - 4))),
      el("td", {}, r.customer),
      el("td", {}, money(r.amount)),
      el("td", {}, el("span", { class: "state " + r.state }, r.state)),
      el("td", {}, r.step || ""),
      el("td", {}, time(r.updated_at)));
    if (r.id === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(r.id));
    return tr;
  }));
  $("#empty").hidden = rows.length > 0;
  const row = rows.find((r) => r.id === selected);
  if (row && row.updated_at !== shownUpdate) {
    shownUpdate = row.updated_at;
    load(selected);
  }
}

function select(id) {
  selected = id;
  shownUpdate = "";
  renderList(); // loads it
}

async function get(url, as) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  return r[as]();
}

async function load(id) {
  let detail, svg;
  try {
    [detail, svg] = await Promise.all([
      get("/ui/orders/" + encodeURIComponent(id), "json"),
      get("/ui/orders/" + encodeURIComponent(id) + "/graph.svg", "text"),
    ]);
  } catch (err) {
    $("#detail").hidden = false;
    $("#detail-summary").textContent = String(err);
    return;
  }
  if (id !== selected) return; // another order was selected meanwhile
  const s = detail.saga;
  $("#detail").hidden = false;
  $("#detail-id").textContent = id;
  const state = $("#detail-state");
  state.className = "state " + s.state;
  state.textContent = s.state + (s.step ? " · " + s.step : "");
  const o = detail.order;
  $("#detail-summary").textContent = o.customer + " — " + o.items.map((i) => i.quantity + " × " + i.sku).join(", ") +
    " — " + money(o.amount) + " by " + o.payment_method + " — order " + o.status + (s.reason ? " (" + s.reason + ")" : "");
  const link = $("#trace-link");
  link.hidden = !detail.trace_url;
  $("#no-trace").hidden = !!detail.trace_url;
  if (detail.trace_url) {
    link.href = detail.trace_url;
    link.textContent = "trace " + detail.trace_id + " in Jaeger";
  }
  $("#graph").innerHTML = svg; // our own SVG, its text escaped by the server
  $("#timeline").replaceChildren(...(s.history || []).map((e) => el("li", { "data-kind": e.kind },
    el("time", {}, time(e.at)),
    el("span", { class: "event" }, e.event || e.kind), " ",
    el("span", { class: "meaning" }, e.meaning || ""),
    e.error ? el("span", { class: "error" }, " — " + e.error) : "",
    e.actor ? " by " + e.actor : "")));
}

function connect() {
  const live = $("#live");
  const es = new EventSource("/ui/stream");
  es.addEventListener("open", () => { live.textContent = "live"; live.classList.remove("off"); });
  es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.add("off"); });
  es.addEventListener("orders", (ev) => { rows = JSON.parse(ev.data); renderList(); });
}

connect();
