/* One leaderboard page, drawn from the JSON in #board-data (sagebench/leaderboard/site.py).
 * Everything from the data is untrusted text: it reaches the page through textContent and
 * setAttribute of fixed attribute names only, never innerHTML. Nothing is fetched. */
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("board-data").textContent);
  const app = document.getElementById("app");
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : String(v));
    }
  }
  const pct = (x) => (x === null || x === undefined ? "-" : (100 * x).toFixed(1));
  const ratio = (x) => (x === null || x === undefined ? "-" : x.toFixed(3));
  const KINDS = {ranked: "ranked", oracles: "oracle (reference, never ranked)",
    incomplete: "verified, lacking a declared budget (not ranked)",
    unverified: "measured, not verified (not ranked)", reported: "reported, not reproduced (not ranked)"};

  // ---------------------------------------------------------------- header and notes
  app.append(el("h1", {}, "Leaderboard ", el("code", {}, data.name)));
  app.append(el("p", {}, "Benchmark fingerprint ", el("code", {}, String(data.fingerprint)), ": ",
    data.description, "."));
  const notes = el("ul", {class: "notes"});
  for (const n of data.notes) notes.append(el("li", {}, n));
  app.append(notes);

  // ---------------------------------------------------------------- tables
  function swatch(style) {
    const s = svg("svg", {class: "swatch", width: 28, height: 10, "aria-hidden": "true"});
    s.append(svg("line", {x1: 1, y1: 5, x2: 27, y2: 5, stroke: style.color, "stroke-width": 2,
      "stroke-dasharray": style.dash || null}));
    s.append(marker(style.marker, 14, 5, 3.2, style.color));
    return s;
  }

  function compareCells(a, b, sign) {
    const emptyA = a[0] === "-" || a[0] === "", emptyB = b[0] === "-" || b[0] === "";
    if (emptyA !== emptyB) return emptyA ? 1 : -1; // empty cells last, whichever the direction
    if (emptyA) return 0;
    const numA = a[1] !== null, numB = b[1] !== null;
    if (numA && numB) return sign * (a[1] - b[1]);
    if (numA !== numB) return sign * (numA ? -1 : 1);
    return sign * a[0].localeCompare(b[0], undefined, {numeric: true, sensitivity: "base"});
  }

  function sortBy(table, col) {
    const th = table.tHead.rows[0].cells[col];
    const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir);
    const sign = dir === "ascending" ? 1 : -1;
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((x, y) => compareCells(x.sageCells[col], y.sageCells[col], sign)); // stable: ties keep order
    for (const r of rows) body.append(r);
  }

  const rowsById = new Map();
  for (const section of data.sections) {
    app.append(el("h2", {id: "section-" + section.kind},
      section.kind === "ranked" ? "Ranked" : section.heading));
    if (section.text) app.append(el("p", {class: "muted"}, section.text));
    const table = el("table", {class: "board", "data-kind": section.kind});
    const head = el("tr");
    section.columns.forEach((header, i) => {
      const numeric = section.rows.some((r) => r.cells[i][1] !== null);
      const button = el("button", {class: "sort", type: "button", title: "sort by " + header}, header);
      button.addEventListener("click", () => sortBy(table, i));
      head.append(el("th", {scope: "col", class: numeric ? "num" : null}, button));
    });
    head.append(el("th", {scope: "col"}, "details"));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    for (const r of section.rows) {
      const row = data.rows[r.row];
      const tr = el("tr", {"data-row": r.row});
      tr.sageCells = r.cells;
      r.cells.forEach((cell, i) => {
        const td = el("td", {class: cell[1] !== null ? "num" : null});
        if (section.columns[i] === "strategy") td.append(swatch(row.style));
        td.append(cell[0]);
        tr.append(td);
      });
      const more = el("button", {class: "details", type: "button", "aria-controls": "details"}, "show");
      more.addEventListener("click", () => showDetails(r.row, true));
      tr.append(el("td", {}, more));
      body.append(tr);
      rowsById.set(r.row, tr);
    }
    table.append(body);
    app.append(el("div", {class: "scroll"}, table));
  }
  if (!data.sections.length) app.append(el("p", {}, "No entries yet."));

  // ---------------------------------------------------------------- curves
  const visible = data.rows.map(() => true);
  let metric = "offloaded_accuracy";
  app.append(el("h2", {id: "curves"}, "Curves"));
  app.append(el("p", {class: "muted"}, "Each line is a row of the tables, each band its 95% interval per budget " +
    "(where the entry reports one). Grey dotted lines are references: oracles, reported or unverified rows. " +
    "Click a legend entry to show or hide a line; hover a point for its value."));
  const controls = el("div", {class: "controls"});
  for (const [value, text] of [["offloaded_accuracy", "offloaded accuracy (%)"], ["ceiling_ratio", "ceiling ratio"]]) {
    const input = el("input", {type: "radio", name: "metric", value: value, checked: value === metric});
    input.addEventListener("change", () => { metric = value; draw(); });
    controls.append(el("label", {}, input, " " + text));
  }
  function setAll(pred) { data.rows.forEach((r, i) => { visible[i] = pred(r); }); syncLegend(); draw(); }
  const buttons = [["show all", () => true], ["hide all", () => false], ["ranked only", (r) => r.kind === "ranked"]];
  for (const [text, pred] of buttons) {
    const b = el("button", {type: "button"}, text);
    b.addEventListener("click", () => setAll(pred));
    controls.append(b);
  }
  app.append(controls);
  const chart = el("div", {class: "chart", id: "chart"});
  const legend = el("div", {class: "legend", id: "legend", role: "group", "aria-label": "lines shown"});
  app.append(el("div", {class: "chart-wrap"}, chart, legend));
  const legendInputs = [];
  let lastKind = null;
  data.rows.forEach((row, i) => {
    if (row.kind !== lastKind) { legend.append(el("div", {class: "group"}, KINDS[row.kind] || row.kind)); lastKind = row.kind; }
    const input = el("input", {type: "checkbox", checked: true, "data-row": i});
    input.addEventListener("change", () => { visible[i] = input.checked; syncLegend(); draw(); });
    legendInputs.push(input);
    legend.append(el("label", {"data-row": i, title: row.name}, input, swatch(row.style), row.name));
  });
  function syncLegend() {
    legendInputs.forEach((input, i) => {
      input.checked = visible[i];
      input.parentElement.classList.toggle("off", !visible[i]);
    });
  }

  function marker(kind, x, y, r, color) {
    const d = {
      "o": null,
      "s": `M${x - r},${y - r}h${2 * r}v${2 * r}h${-2 * r}z`,
      "^": `M${x},${y - r * 1.2}L${x + r * 1.1},${y + r * 0.8}L${x - r * 1.1},${y + r * 0.8}z`,
      "v": `M${x},${y + r * 1.2}L${x + r * 1.1},${y - r * 0.8}L${x - r * 1.1},${y - r * 0.8}z`,
      "D": `M${x},${y - r * 1.3}L${x + r},${y}L${x},${y + r * 1.3}L${x - r},${y}z`,
      "P": `M${x - r * 0.4},${y - r}h${r * 0.8}v${r * 0.6}h${r * 0.6}v${r * 0.8}h${-r * 0.6}v${r * 0.6}` +
           `h${-r * 0.8}v${-r * 0.6}h${-r * 0.6}v${-r * 0.8}h${r * 0.6}z`,
      "X": `M${x - r},${y - r}L${x + r},${y + r}M${x + r},${y - r}L${x - r},${y + r}`,
      "x": `M${x - r},${y - r}L${x + r},${y + r}M${x + r},${y - r}L${x - r},${y + r}`,
      "+": `M${x - r},${y}h${2 * r}M${x},${y - r}v${2 * r}`,
      "1": `M${x},${y}v${r * 1.2}M${x},${y}l${-r},${-r * 0.7}M${x},${y}l${r},${-r * 0.7}`,
      "*": `M${x - r},${y}h${2 * r}M${x},${y - r}v${2 * r}M${x - r * 0.7},${y - r * 0.7}l${1.4 * r},${1.4 * r}` +
           `M${x + r * 0.7},${y - r * 0.7}l${-1.4 * r},${1.4 * r}`,
      "|": `M${x},${y - r}v${2 * r}`,
    }[kind];
    if (d === null || d === undefined) return svg("circle", {cx: x, cy: y, r: r, fill: color});
    const open = "Xx+1*|".includes(kind);
    return svg("path", {d: d, fill: open ? "none" : color, stroke: color, "stroke-width": open ? 1.6 : 0.5});
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  function draw() {
    const W = 760, H = 440, m = {l: 62, r: 18, t: 16, b: 50};
    const scale = metric === "offloaded_accuracy" ? 100 : 1;
    const ref = metric === "offloaded_accuracy" ? (data.ceiling === null ? null : 100 * data.ceiling) : 1;
    const shown = data.rows.map((r, i) => i).filter((i) => visible[i]);
    const xs = data.budgets.length ? data.budgets : [0, 1];
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    const pad = (x1 - x0) * 0.03; x0 -= pad; x1 += pad;
    const ys = [];
    for (const i of shown) {
      const c = data.rows[i].curve;
      c[metric].forEach((v, k) => {
        if (v !== null) ys.push(v * scale);
        const ci = c[metric + "_ci"][k];
        if (ci) ys.push(ci[0] * scale, ci[1] * scale);
      });
    }
    if (ref !== null) ys.push(ref);
    let y0 = ys.length ? Math.min(...ys) : 0, y1 = ys.length ? Math.max(...ys) : 1;
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const ypad = (y1 - y0) * 0.05; y0 -= ypad; y1 += ypad;
    const X = (v) => m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (v) => H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": (metric === "offloaded_accuracy" ? "offloaded accuracy" : "ceiling ratio") + " against the budget"});
    const grid = svg("g", {class: "grid"}), axis = svg("g", {class: "axis"});
    const yticks = niceTicks(y0, y1, 8);
    for (const v of yticks) {
      grid.append(svg("line", {x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v)}));
      axis.append(svg("text", {x: m.l - 6, y: Y(v) + 4, "text-anchor": "end"}, metric === "ceiling_ratio" ? v.toFixed(2) : v.toFixed(yticks.length > 1 && yticks[1] - yticks[0] < 1 ? 1 : 0)));
    }
    const xticks = data.budgets.length <= 12 ? data.budgets : niceTicks(x0, x1, 10);
    for (const v of xticks) {
      grid.append(svg("line", {x1: X(v), x2: X(v), y1: m.t, y2: H - m.b}));
      axis.append(svg("text", {x: X(v), y: H - m.b + 16, "text-anchor": "middle"}, v));
    }
    axis.append(svg("path", {d: `M${m.l},${m.t}V${H - m.b}H${W - m.r}`, fill: "none"}));
    axis.append(svg("text", {x: (m.l + W - m.r) / 2, y: H - 10, "text-anchor": "middle"},
      data.budget_unit === "patches" ? "budget B (patches sent)" : "byte budget per request"));
    axis.append(svg("text", {x: 14, y: (m.t + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`},
      metric === "offloaded_accuracy" ? "offloaded accuracy (%)" : "ceiling ratio"));
    root.append(grid, axis);
    if (ref !== null) {
      const g = svg("g", {class: "reference"});
      g.append(svg("line", {x1: m.l, x2: W - m.r, y1: Y(ref), y2: Y(ref), stroke: "#333", "stroke-dasharray": "1 4",
        "stroke-width": 1.4}));
      g.append(svg("text", {x: m.l + 6, y: Y(ref) - 5, "text-anchor": "start"},
        metric === "offloaded_accuracy" ? `ceiling (all ${data.num_patches || ""} patches)`.replace("all  ", "all ")
          : "ceiling"));
      root.append(g);
    }
    for (const i of shown) {
      const row = data.rows[i], c = row.curve, st = row.style;
      const g = svg("g", {class: "series", "data-row": i});
      const band = c.budgets.map((b, k) => [b, c[metric + "_ci"][k]]).filter((p) => p[1]);
      if (band.length >= 2) {
        const up = band.map((p) => `${X(p[0])},${Y(p[1][1] * scale)}`);
        const down = band.slice().reverse().map((p) => `${X(p[0])},${Y(p[1][0] * scale)}`);
        g.append(svg("polygon", {points: up.concat(down).join(" "), fill: st.color, "fill-opacity": 0.13, stroke: "none"}));
      }
      const pts = c.budgets.map((b, k) => [b, c[metric][k], c[metric + "_ci"][k]]).filter((p) => p[1] !== null);
      if (pts.length) {
        g.append(svg("path", {class: "line", d: "M" + pts.map((p) => `${X(p[0])},${Y(p[1] * scale)}`).join("L"),
          stroke: st.color, "stroke-dasharray": st.dash || null}));
      }
      for (const [b, v, ci] of pts) {
        const mk = marker(st.marker, X(b), Y(v * scale), 3.4, st.color);
        const value = metric === "offloaded_accuracy" ? pct(v) + "%" : ratio(v);
        const interval = ci ? (metric === "offloaded_accuracy" ? ` [${pct(ci[0])}, ${pct(ci[1])}]` : ` [${ratio(ci[0])}, ${ratio(ci[1])}]`) : "";
        mk.append(svg("title", {}, `${row.name}: ${data.budget_unit === "patches" ? "B=" : "bytes="}${b}: ${value}${interval}`));
        g.append(mk);
      }
      root.append(g);
    }
    chart.replaceChildren(root);
  }
  draw();

  // ---------------------------------------------------------------- details
  app.append(el("h2", {id: "details-heading"}, "Details"));
  const details = el("section", {id: "details", "aria-live": "polite"});
  app.append(details);

  function facts(pairs) {
    const dl = el("dl", {class: "facts"});
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "") continue;
      dl.append(el("dt", {}, k), el("dd", {}, v instanceof Node ? v : String(v)));
    }
    return dl;
  }
  function json(title, value) {
    if (value === null || value === undefined) return null;
    return el("details", {}, el("summary", {}, title), el("pre", {}, JSON.stringify(value, null, 2)));
  }

  function perClass(entry, strategy) {
    const classes = entry.per_class || [];
    if (!classes.length) return el("p", {class: "muted"}, "No per-class figures in this entry.");
    const prefix = strategy + "/";
    const keys = Object.keys(classes[0].offloaded_accuracy || {}).filter((k) => k.startsWith(prefix));
    const table = el("table", {class: "board per-class"});
    const head = el("tr", {}, el("th", {}, "class"), el("th", {class: "num"}, "images"),
      el("th", {class: "num"}, "offloaded"), el("th", {class: "num"}, "ceiling %"));
    for (const k of keys) head.append(el("th", {class: "num"}, k.slice(prefix.length) + " %"));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    for (const c of classes) {
      const tr = el("tr", {}, el("td", {}, c.class), el("td", {class: "num"}, c.num_images),
        el("td", {class: "num"}, c.num_offloaded), el("td", {class: "num"}, pct(c.ceiling_accuracy)));
      for (const k of keys) tr.append(el("td", {class: "num"}, pct((c.offloaded_accuracy || {})[k])));
      body.append(tr);
    }
    table.append(body);
    return el("div", {class: "scroll", style: "max-height: 420px; overflow-y: auto"}, table);
  }

  function showDetails(i, scroll) {
    const row = data.rows[i];
    for (const tr of rowsById.values()) tr.classList.toggle("selected", tr === rowsById.get(i));
    const out = [el("h3", {}, swatch(row.style), row.name)];
    out.push(facts([
      ["section", KINDS[row.kind] || row.kind],
      ["rank (95% simultaneous interval)", row.rank ? (row.rank[0] === row.rank[1] ? row.rank[0] : `${row.rank[0]}-${row.rank[1]}`) : null],
      ["score", row.score === null ? null : ratio(row.score) + (row.score_ci ? ` [${ratio(row.score_ci[0])}, ${ratio(row.score_ci[1])}]` : "")],
      ["paired images", row.other_images ? "its entry offloaded other images too: figures on the paired images" : null],
    ]));
    for (const [entryName, strategy] of row.aliases) {
      const entry = data.entries[entryName];
      out.push(el("h4", {}, "entry ", el("code", {}, entryName), ", strategy ", el("code", {}, strategy)));
      if (!entry) { out.push(el("p", {class: "muted"}, "(entry not readable)")); continue; }
      const rep = entry.reproduction || {};
      const ok = rep.outcome && rep.outcome.status === "reproduced";
      const bad = rep.outcome && rep.outcome.status !== "reproduced";
      const prov = entry.provenance || {};
      const spec = (entry.strategies || {})[strategy] || {};
      out.push(facts([
        ["reproduced", entry.reported ? "reported numbers: nothing to rerun"
          : el("span", {class: ok ? "status-yes" : bad ? "status-no" : null},
            rep.line ? `${rep.label}: ${rep.line}` : "not checked (no stored `verify --reproduce` outcome for this entry as it is)")],
        ["source", entry.source],
        ["per-sample records", entry.reported ? null : (entry.verified ? "on the board (every figure recomputed from them)" : "missing")],
        ["strategy", spec.name ? `${spec.name}${spec.code && spec.code.distribution ? " from " + spec.code.distribution + " " + (spec.code.version || "") : ""}` : null],
        ["options", spec.options ? JSON.stringify(spec.options) : null],
        ["code", spec.code ? `${spec.code.module || ""}.${spec.code.class || ""} (source sha256 ${spec.code.source_sha256 || "-"})` : null],
        ["images", entry.num_images === undefined || entry.num_images === null ? null
          : `${entry.num_images}` + (typeof entry.num_offloaded === "number" ? ` (${entry.num_offloaded} offloaded)` : "")],
        ["edge accuracy", entry.edge_accuracy === null || entry.edge_accuracy === undefined ? null : pct(entry.edge_accuracy) + "%"],
        ["sagebench", prov.sagebench_version ? `${prov.sagebench_version}${prov.git_sha ? " @ " + prov.git_sha : ""}` : null],
        ["run on", prov.device ? `${prov.device}, ${prov.world_size || 1} process(es), ${prov.precision || ""}; torch ${prov.torch || "?"}, timm ${prov.timm || "?"}, Python ${prov.python || "?"}` : null],
        ["date (UTC)", prov.utc_time || (entry.submission || {}).utc_time],
        ["command", prov.command],
        ["entry sha256", (entry.submission || {}).sha256],
      ]));
      out.push(el("h4", {}, "Per-class accuracy"), perClass(entry, strategy));
      for (const part of [json("config (as run)", entry.config), json("provenance", entry.provenance),
        json("strategy spec", spec), json("stored reproduction outcome", rep.outcome)]) if (part) out.push(part);
    }
    details.replaceChildren(...out);
    if (scroll) document.getElementById("details-heading").scrollIntoView({block: "start"});
  }
  if (data.rows.length) showDetails(0, false);
  else details.append(el("p", {class: "muted"}, "No rows."));

  app.append(el("footer", {}, `Written by sagebench leaderboard render --html (sagebench ${data.version}). ` +
    "Static page: nothing is fetched; the data is embedded above as JSON."));
})();
