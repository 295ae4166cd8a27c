// The book's plotly figures (cegppo_edu.plots.style.BookRenderer stores each one as a <div> and a JSON <script>),
// drawn once plotly.js has loaded. book_assets.py loads plotly.js and then this file, both with `defer`: the
// page's text shows before 1.5 MB of plotly.js are parsed, and the figures draw in page order, one per task, so
// the first one is on screen before the others are computed.
//
// On a narrow screen (a figure under NARROW px wide, a phone) each figure is drawn with its legend below the plot
// and its subplots in one column (oneColumn), and taller, so that no plot is squeezed beside its legend or
// neighbour. Every plotly slider gets a keyboard twin: a native range input before the figure, reached with Tab,
// named for a screen reader and moved with the arrow keys; moving it applies the slider's step, and moving the
// plotly slider moves it.
(function () {
  "use strict";
  const NARROW = 600;

  function axisKeys(layout, letter) {
    return Object.keys(layout).filter((k) => new RegExp(`^${letter}axis\\d*$`).test(k)).sort();
  }

  function axisRef(key) { // "xaxis2" -> "x2"
    return key.replace("axis", "");
  }

  // Subplots side by side -> one column, in reading order (row by row, left to right). Every cell keeps its
  // height in pixels; the figure grows. Subplot titles (paper annotations at the top of a cell) and colour bars
  // follow their cell. Returns the new height, or null when the figure has a single column already.
  function oneColumn(layout, data, height) {
    const xs = axisKeys(layout, "x").filter((k) => layout[k].domain && layout[k].anchor);
    const columns = new Set(xs.map((k) => layout[k].domain[0].toFixed(3)));
    if (xs.length < 2 || columns.size < 2) return null;
    const margin = layout.margin || {};
    const top = margin.t === undefined ? 100 : margin.t;
    const bottom = margin.b === undefined ? 80 : margin.b;
    const plotHeight = height - top - bottom;
    const cells = xs.map((xk) => {
      const yk = `yaxis${layout[xk].anchor.slice(1)}`;
      const y = (layout[yk] && layout[yk].domain) || [0, 1];
      return {xk, yk, x: layout[xk].domain.slice(), y: y.slice(), px: Math.max(170, plotHeight * (y[1] - y[0]))};
    }).sort((a, b) => (b.y[1] - a.y[1]) || (a.x[0] - b.x[0]));
    const gap = 64; // px between cells: the x tick labels and the next cell's title
    const total = cells.reduce((sum, c) => sum + c.px, 0) + gap * (cells.length - 1);
    let cursor = total;
    const annotations = (layout.annotations || []).map((a) => ({...a}));
    cells.forEach((cell) => {
      const y1 = cursor / total;
      const y0 = (cursor - cell.px) / total;
      cursor -= cell.px + gap;
      annotations.forEach((a) => { // a subplot title: centred over the cell's old top edge
        if (a.xref === "paper" && a.yref === "paper" && Math.abs(a.y - cell.y[1]) < 0.02
            && Math.abs(a.x - (cell.x[0] + cell.x[1]) / 2) < 0.02 && !a.moved) {
          Object.assign(a, {x: 0.5, y: y1, moved: true});
        }
      });
      layout[cell.xk] = {...layout[cell.xk], domain: [0, 1]};
      layout[cell.yk] = {...layout[cell.yk], domain: [y0, y1], showticklabels: true};
      data.forEach((trace) => {
        if (trace.colorbar && (trace.xaxis || "x") === axisRef(cell.xk)) {
          trace.colorbar = {...trace.colorbar, x: 1.02, xanchor: "left", y: (y0 + y1) / 2, yanchor: "middle",
                            len: y1 - y0};
        }
      });
    });
    layout.annotations = annotations.map(({moved, ...a}) => a);
    return top + bottom + total;
  }

  // How many rows a horizontal legend of `names` takes in `width` px (plotly's 12-px font, 40 px per symbol).
  function legendRows(names, width) {
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = "12px 'Open Sans', verdana, arial, sans-serif";
    let rows = 1, used = 0;
    names.forEach((name) => {
      const w = ctx.measureText(String(name).replace(/<[^>]+>/g, "")).width + 46;
      if (used > 0 && used + w > width) { rows += 1; used = 0; }
      used += w;
    });
    return rows;
  }

  // A title re-wrapped for `chars` characters a line (style.wrap does it for a 700-px column).
  function rewrap(text, chars) {
    const lines = [];
    let line = "";
    String(text).replace(/<br>/g, " ").split(" ").filter((w) => w).forEach((word) => {
      if (line && line.length + 1 + word.length > chars) { lines.push(line); line = word; }
      else line = line ? `${line} ${word}` : word;
    });
    return lines.concat(line ? [line] : []).join("<br>");
  }

  function titleText(layout) {
    return layout.title && (typeof layout.title === "string" ? layout.title : layout.title.text);
  }

  // Titles (and the titles each slider step sets) wrapped to the figure's width, with room above the plot.
  function fitTitles(layout, width) {
    const chars = Math.max(24, Math.floor((width - 24) / 7.2));
    let lines = 0;
    if (titleText(layout)) {
      const text = rewrap(titleText(layout), chars);
      layout.title = {...(typeof layout.title === "string" ? {} : layout.title), text};
      lines = text.split("<br>").length;
    }
    (layout.sliders || []).forEach((slider) => (slider.steps || []).forEach((step) => {
      const update = step.args && step.args[1];
      if (update && update["title.text"]) {
        update["title.text"] = rewrap(update["title.text"], chars);
        lines = Math.max(lines, update["title.text"].split("<br>").length);
      }
    }));
    if (!lines) return;
    const subplotTitles = (layout.annotations || []).some((a) => a.yref === "paper" && a.y >= 0.99);
    const margin = {...(layout.margin || {})};
    margin.t = Math.max(margin.t || 0, 34 + 19 * lines + (subplotTitles ? 26 : 0));
    layout.margin = margin;
  }

  // The layout of a figure drawn `width` px wide: unchanged on a wide screen; on a narrow one, one column of
  // subplots and a horizontal legend at the bottom, under the slider if there is one. Returns the height.
  function fitToWidth(layout, data, width) {
    let height = layout.height || 450;
    if (width >= NARROW) return height;
    const top = (layout.margin && layout.margin.t) || 0;
    fitTitles(layout, width);
    height += Math.max(0, ((layout.margin && layout.margin.t) || 0) - top);
    const stacked = oneColumn(layout, data, height);
    if (stacked) height = stacked;
    // Notes inside the plot (a schematic's cells, a panel's text) keep their lines: their font shrinks with the
    // width, down to 60 % (a plotly annotation does not wrap)
    const scale = Math.max(0.6, Math.min(1, width / 700));
    layout.annotations = (layout.annotations || []).map((a) => (
      a.text && String(a.text).includes("<br>") ? {...a, font: {...(a.font || {}), size: Math.round((a.font && a.font.size || 12) * scale * 10) / 10}} : a));
    const names = data.filter((t) => t.showlegend !== false && t.name && (t.type !== "heatmap"))
      .map((t) => t.name).filter((n, i, all) => all.indexOf(n) === i);
    if (layout.showlegend !== false && names.length > 0) {
      const legend = 24 * legendRows(names, width - 24) + 8;
      const below = (layout.sliders && layout.sliders.length ? 150 : 70);
      const margin = {...(layout.margin || {})};
      const extra = legend + below - (margin.b === undefined ? 80 : margin.b);
      margin.b = legend + below;
      layout.margin = margin;
      layout.legend = {...(layout.legend || {}), orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0,
                       yanchor: "bottom"};
      height += Math.max(0, extra);
    }
    if (!data.some((t) => t.colorbar || t.type === "heatmap")) { // no colour bar: the right margin is not needed
      layout.margin = {...(layout.margin || {}), r: 16};
    }
    layout.height = height;
    return height;
  }

  // A native range input for each plotly slider: Tab reaches it, a screen reader reads its name and the step's
  // label, the arrow keys move it; it applies the step as the plotly slider does, and follows that slider.
  function keyboardSliders(gd) {
    (gd.layout.sliders || []).forEach((slider, index) => {
      const steps = slider.steps || [];
      if (steps.length < 2) return;
      const prefix = ((slider.currentvalue && slider.currentvalue.prefix) || "step").replace(/[:=\s]+$/, "");
      const input = document.createElement("input");
      Object.assign(input, {type: "range", min: 0, max: steps.length - 1, step: 1, value: slider.active || 0,
                            className: "cegppo-slider-key"});
      const title = ((gd.layout.title && gd.layout.title.text) || "").replace(/<[^>]+>/g, " ").slice(0, 80);
      input.setAttribute("aria-label", `Figure slider, ${prefix}: ${steps.length} steps${title ? ` (${title})` : ""}`);
      const say = (k) => input.setAttribute("aria-valuetext", `${prefix} ${steps[k].label}`);
      say(Number(input.value));
      input.addEventListener("input", () => {
        const k = Number(input.value);
        const step = steps[k];
        const layoutUpdate = {...((step.args && step.args[1]) || {}), [`sliders[${index}].active`]: k};
        if (step.method === "update") window.Plotly.update(gd, (step.args && step.args[0]) || {}, layoutUpdate);
        else if (step.method === "restyle") window.Plotly.restyle(gd, step.args[0] || {});
        else window.Plotly.relayout(gd, layoutUpdate);
        say(k);
      });
      gd.on("plotly_sliderchange", (event) => {
        if (gd.layout.sliders.length === 1 || event.slider._index === index) {
          input.value = event.slider.active;
          say(event.slider.active);
        }
      });
      gd.parentNode.insertBefore(input, gd);
    });
  }

  async function draw(script) {
    if (script.dataset.drawn) return;
    script.dataset.drawn = "1";
    const gd = document.getElementById(script.dataset.cegppoFigure);
    if (!gd) return;
    const figure = JSON.parse(script.textContent);
    const layout = figure.layout || {};
    const data = figure.data || [];
    const height = fitToWidth(layout, data, gd.clientWidth || gd.parentNode.clientWidth || 700);
    gd.style.height = `${height}px`;
    await window.Plotly.newPlot(gd, data, layout, figure.config || {});
    keyboardSliders(gd);
  }

  async function drawAll() {
    if (!window.Plotly) return; // plotly.js did not load: the page keeps its text
    for (const script of document.querySelectorAll("script[data-cegppo-figure]")) {
      await draw(script);
      await new Promise((resolve) => setTimeout(resolve, 0)); // let the browser paint this one
    }
  }

  window.cegppoFigures = {drawAll, oneColumn, fitToWidth, NARROW};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
