"""The status page (SPEC 12): one self-contained HTML document that polls /api/status."""

from __future__ import annotations

import html
import json

from agent.ui.i18n import table, text

POLL_MS = 1000  # a change shows within POLL_MS plus one request: inside SPEC 12's 2 s

_CSS = """
*{box-sizing:border-box}
html,body{margin:0;height:100%}
body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
 background:#10151c;color:#eef2f6;display:flex;flex-direction:column;padding:8px;gap:8px}
header{display:flex;justify-content:space-between;align-items:baseline;font-size:20px}
header b{font-size:24px}
#banner{display:none;background:#b3261e;color:#fff;font-size:22px;padding:6px 10px;border-radius:6px}
#bays{flex:1;display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:8px;
 align-content:stretch}
.bay{border-radius:10px;padding:10px 12px;background:#1c2530;border-left:10px solid #5a6572;
 display:flex;flex-direction:column;gap:6px;min-height:0;overflow:hidden}
.bay .top{display:flex;justify-content:space-between;font-size:20px;color:#b8c2cc}
.bay .top b{font-size:26px;color:#eef2f6}
.bay .state{font-size:clamp(30px,4.6vw,52px);font-weight:bold;line-height:1.15}
.bay .state.long{font-size:clamp(24px,3.3vw,36px)}
.bay .who{font-size:20px;color:#d5dde5;overflow-wrap:anywhere}
.bar{height:22px;background:#33404d;border-radius:11px;overflow:hidden}
.bar>div{height:100%;background:#3b8eea;transition:width .4s}
.eta{font-size:18px;color:#b8c2cc}
.findings{margin:0;padding-left:1.1em;font-size:18px;color:#ffd8a8}
.findings li.fault{color:#ffb4ab}
.s-ready{border-left-color:#2fb344}.s-ready .state{color:#5fd873}
.s-fault{border-left-color:#e5484d}.s-fault .state{color:#ff8a8d}
.s-offloading,.s-identifying,.s-validating{border-left-color:#3b8eea}
.s-offloading .state,.s-identifying .state,.s-validating .state{color:#8cc4ff}
.s-charging{border-left-color:#f5a524}.s-charging .state{color:#ffc861}
.s-empty .state,.s-unknown .state{color:#8d99a6}
footer{display:flex;flex-wrap:wrap;gap:6px 22px;font-size:19px;background:#1c2530;
 border-radius:10px;padding:8px 12px}
footer .alerts{flex-basis:100%;color:#ffd8a8}
footer .alerts.none{color:#8d99a6}
"""

_JS = """
const T = JSON.parse(document.getElementById("words").textContent);
const t = (k) => (k in T ? T[k] : k.split(".").pop());
const seen = {};
const LONG = document.documentElement.lang === "en" ? 16 : 8;  // longer headlines get smaller type
function el(tag, cls, words) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (words !== undefined) e.textContent = words;
  return e;
}
function said(f) { return ("code." + f.code) in T ? t("code." + f.code) : f.message; }
function two(n) { return String(n).padStart(2, "0"); }
function clock(d) {
  const hm = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  const today = new Date().toDateString() === d.toDateString();
  return today ? hm : d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + hm;
}
function mb(n) { return (n / 1e6).toFixed(1) + " MB"; }
function span(s) {
  if (s < 90) return Math.round(s) + " " + t("label.seconds");
  if (s < 5400) return Math.round(s / 60) + " " + t("label.minutes");
  return (s / 3600).toFixed(1) + " " + t("label.hours");
}
function percent(p) {
  if (p.bytes_total > 0) return Math.floor(100 * p.bytes_done / p.bytes_total);
  return p.clips_total > 0 ? Math.floor(100 * p.clips_done / p.clips_total) : 0;
}
function eta(n, p) {
  const now = Date.now() / 1000, s = seen[n];
  if (!s || p.bytes_done < s.bytes) { seen[n] = {bytes: p.bytes_done, at: now, rate: 0}; return null; }
  if (p.bytes_done > s.bytes && now > s.at) {
    const r = (p.bytes_done - s.bytes) / (now - s.at);
    s.rate = s.rate ? 0.7 * s.rate + 0.3 * r : r;
    s.bytes = p.bytes_done; s.at = now;
  }
  return s.rate > 0 ? (p.bytes_total - p.bytes_done) / s.rate : null;
}
function headline(b, state) {
  const p = b.progress || {};
  if (state === "offloading") return t("state.offloading") + " " + percent(p) + "%";
  if (state === "fault") {
    const f = (b.findings || []).find((x) => x.severity === "fault");
    return f ? t("label.fault_prefix") + said(f) : t("state.fault");
  }
  return t("state." + state);
}
function shown(b, state) {
  const keep = ["fault", "warning"];
  if (state === "identifying" || state === "charging") keep.push("info");
  const counts = new Map();
  const first = (b.findings || []).find((x) => x.severity === "fault");
  for (const f of b.findings || []) {
    if (!keep.includes(f.severity) || (state === "fault" && f === first)) continue;
    const k = said(f);
    const c = counts.get(k) || {n: 0, sev: f.severity};
    c.n += 1; counts.set(k, c);
  }
  return [...counts].map(([k, c]) => [c.n > 1 ? k + " ×" + c.n : k, c.sev]);
}
function bay(n, b) {
  const state = b.state || "unknown";
  const card = el("section", "bay s-" + state);
  card.id = "bay-" + n; card.dataset.state = state;
  const top = el("div", "top");
  top.append(el("b", "", t("label.bay") + " " + n));
  if (b.battery_pct !== null && b.battery_pct !== undefined && state !== "empty")
    top.append(el("span", "", t("label.battery") + " " + Math.round(b.battery_pct) + "%"));
  const words = headline(b, state);
  card.append(top, el("div", words.length > LONG ? "state long" : "state", words));
  if (b.officer_id) card.append(el("div", "who", t("label.officer") + " " + b.officer_id));
  if (b.device_id) card.append(el("div", "who", t("label.device") + " " + b.device_id));
  const p = b.progress || {};
  if (state === "offloading") {
    const bar = el("div", "bar"), fill = el("div");
    fill.style.width = percent(p) + "%"; bar.append(fill); card.append(bar);
    const left = eta(n, p);
    let line = p.clips_done + "/" + p.clips_total + " " + t("label.clips") + " · " +
      mb(p.bytes_done) + " / " + mb(p.bytes_total);
    if (left !== null) line += " · " + t("label.eta") + " " + span(left);
    card.append(el("div", "eta", line));
  } else { delete seen[n]; }
  const list = shown(b, state);
  if (list.length) {
    const ul = el("ul", "findings");
    for (const [words, sev] of list.slice(0, 4)) ul.append(el("li", sev, words));
    card.append(ul);
  }
  return card;
}
function dock(s) {
  const q = s.queue || {};
  const parts = [t("label.queue") + " " + q.clips + " " + t("label.clips") + " (" + mb(q.bytes) + ")"];
  if (q.oldest_unsynced_age_s) parts[0] += ", " + t("label.oldest") + " " + span(q.oldest_unsynced_age_s);
  const last = s.last_synced_at ? clock(new Date(s.last_synced_at)) : t("label.never");
  parts.push(t("label.last_upload") + " " + last);
  if (s.key_fingerprint) parts.push(t("label.key") + " " + s.key_fingerprint);
  const foot = document.querySelector("footer");
  foot.replaceChildren(...parts.map((x) => el("span", "", x)));
  const alerts = (s.alerts || []).map((a) => ("code." + a.code) in T ? t("code." + a.code) : a.message);
  const box = el("div", alerts.length ? "alerts" : "alerts none");
  box.id = "alerts";
  box.textContent = alerts.length ? t("label.alerts") + alerts.join(t("label.sep")) : t("label.no_alerts");
  foot.append(box);
}
function banner(words) {
  const b = document.getElementById("banner");
  b.textContent = words || ""; b.style.display = words ? "block" : "none";
}
function render(s) {
  document.getElementById("bays").replaceChildren(...Object.entries(s.bays).map(([n, b]) => bay(n, b)));
  dock(s);
  banner(s.daemon_running ? "" : t("label.not_running"));
  document.getElementById("updated").textContent = t("label.updated") + " " + clock(new Date());
}
async function poll() {
  try {
    const r = await fetch("api/status", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status);
    render(await r.json());
  } catch (e) {
    banner(t("label.unreachable"));
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
"""


def render_page(dock_id: str, language: str) -> str:
    """The whole page for `dock_id` in `language`: inline style and script, no external asset."""
    words = json.dumps(table(language), ensure_ascii=False).replace("</", "<\\/")
    title = html.escape(f"{text('label.title', language)} {dock_id}")
    script = _JS.replace("POLL_MS)", f"{POLL_MS})")
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f'<header><b>{title}</b><span id="updated"></span></header>'
        '<div id="banner"></div><main id="bays"></main><footer></footer>'
        f'<script id="words" type="application/json">{words}</script>'
        f"<script>{script}</script></body></html>\n"
    )
