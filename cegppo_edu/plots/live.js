// The live figures of cegppo_edu.plots.live: the package's formulas, run in the page, so that every input moves
// on the static site (no kernel). live.py pastes this file into each figure's <script> and calls
//     window.cegppoLive = window.cegppoLive || defineCegppoLive(constants)
// so the first figure of a page defines the functions and the others reuse them.
//
// Everything about the methods (defaults, fixed values, ranges, labels, colours) arrives in each figure's JSON
// config, read from losses.METHODS; `constants` holds the package's numbers (the ratio clamp). This file writes
// no number of the package: a change there reaches the page through the config.
//
// Each formula mirrors one of the package; tests/test_live.py evaluates them in chromium on a grid and compares
// them with the package to 1e-12:
//   gradientWeight  = losses.gradient_weight (families: clip = losses.clip_weight, cispo = losses.cispo_weight)
//   softmaxUpdate   = toy.demos.single_softmax_update's delta, entropy.predicted_entropy_change, ΔH measured
function defineCegppoLive(constants) {
  "use strict";
  const NARROW = 600; // px: below it a figure is drawn for a phone (as book_figures.js does)

  // ------------------------------------------------------------------------------------------------
  // The formulas: pure functions of numbers and arrays
  // ------------------------------------------------------------------------------------------------

  // Like gradient_weight: r may be any number in [0, inf]; F uses r clamped to [e^-20, e^20] (LOG_RATIO_CLAMP).
  function clampRatio(r) {
    if (!(r >= 0)) throw new RangeError(`ratio=${r}: a ratio π/π_old lies in [0, inf]`);
    return Math.min(Math.max(r, constants.ratioMin), constants.ratioMax);
  }

  // losses.clip_weight (PPO/GRPO and DAPO: β = 0, GPPO: β = 1, CE-GPPO): r inside [1−ε_l, 1+ε_h], β1(1−ε_l) on
  // the lower clipped side (Â<0), β2(1+ε_h) on the upper one (Â>0), 0 where the dual clip freezes the token.
  // The comparisons are strict, as in losses.clipped_sides: on the edges r = 1±ε a token counts as inside.
  function clipWeight(r, adv, p) {
    const lower = r < 1 - p.eps_low && adv < 0;
    const upper = r > 1 + p.eps_high && adv > 0;
    const weight = lower ? p.beta1 * (1 - p.eps_low) : upper ? p.beta2 * (1 + p.eps_high) : r;
    const frozen = p.dual_clip !== null && p.dual_clip !== undefined && adv < 0 && r > p.dual_clip;
    return frozen ? 0 : weight;
  }

  // losses.cispo_weight: clip(r, 1−ε_l, 1+ε_h) on every token, whatever the sign of Â (torch.clamp's order).
  function cispoWeight(r, adv, p) {
    return Math.min(Math.max(r, 1 - p.eps_low), 1 + p.eps_high);
  }

  const FAMILIES = {clip: clipWeight, cispo: cispoWeight};

  // F(r, Â) of a weight family; `params` holds the method's full hyper-parameters (defaults, inputs, fixed).
  function gradientWeight(family, r, adv, params) {
    if (!(family in FAMILIES)) throw new RangeError(`family=${family}: one of ${Object.keys(FAMILIES)}`);
    return FAMILIES[family](clampRatio(r), adv, params);
  }

  // log π of logits z, shifted by the max as torch.log_softmax does. (V,) -> (V,)
  function logSoftmax(z) {
    const top = Math.max(...z);
    const logSum = Math.log(z.reduce((sum, x) => sum + Math.exp(x - top), 0));
    return z.map((x) => x - top - logSum);
  }

  function dot(a, b) {
    return a.reduce((sum, x, i) => sum + x * b[i], 0);
  }

  // H = −Σ π log π of softmax(z), in nats. (V,) -> number
  function entropy(z) {
    const logpi = logSoftmax(z);
    return -dot(logpi.map(Math.exp), logpi);
  }

  // First-order ΔH ≈ −Cov_{b∼π}(log π_b, Δz_b), as entropy.predicted_entropy_change. (V,) x3 -> number
  function predictedEntropyChange(logpi, pi, delta) {
    const meanLogpi = dot(pi, logpi);
    const meanDelta = dot(pi, delta);
    return -pi.reduce((sum, p, b) => sum + p * (logpi[b] - meanLogpi) * (delta[b] - meanDelta), 0);
  }

  // One SGD step on one kept token a = `token`: Δz = η·F·Â·(onehot(a) − π), since ∇_z log π_a = onehot(a) − π
  // (teaching.softmax_update). logits: (V,). Returns {delta: (V,), weight: F, prob: π (V,), dHPred, dHMeas}.
  function softmaxUpdate(logits, token, ratio, adv, family, params, lr) {
    const logpi = logSoftmax(logits);
    const pi = logpi.map(Math.exp);
    const weight = gradientWeight(family, ratio, adv, params);
    const delta = pi.map((p, b) => lr * weight * adv * ((b === token ? 1 : 0) - p));
    const after = logits.map((z, b) => z + delta[b]);
    return {delta, weight, prob: pi, dHPred: predictedEntropyChange(logpi, pi, delta),
            dHMeas: entropy(after) - entropy(logits)};
  }

  // The ratios where F(·, Â) changes its formula, both sides of each jump, and the ends: F is piecewise linear
  // in r, so a line through these points is exact (as plots.figures.weight_breakpoints). -> sorted (n,)
  function breakpoints(params, rMax) {
    const edges = [1 - params.eps_low, 1 + params.eps_high];
    if (params.dual_clip !== null && params.dual_clip !== undefined) edges.push(params.dual_clip);
    const points = [0, rMax];
    edges.forEach((e) => points.push(e - 1e-9, e, e + 1e-9));
    return [...new Set(points.filter((x) => x >= 0 && x <= rMax))].sort((a, b) => a - b);
  }

  // ------------------------------------------------------------------------------------------------
  // The page: the inputs give the parameters, the parameters give the traces, Plotly.react draws them
  // ------------------------------------------------------------------------------------------------

  function fmt(x) {
    return String(Number(x.toFixed(3)));
  }

  function signed(x, digits) {
    return (x < 0 ? "−" : "+") + Math.abs(x).toFixed(digits);
  }

  // The inputs of one figure: data-input="method" | "token" | a hyper-parameter | "ratio", "adv", "lr".
  function inputs(root) {
    const found = {};
    root.querySelectorAll("[data-input]").forEach((el) => { found[el.dataset.input] = el; });
    return found;
  }

  function showValue(root, name, text) {
    root.querySelector(`output[data-for="${name}"]`).textContent = text;
  }

  // Put the hyper-parameter inputs where `method` wants them: its own ones enabled, from its range and at its
  // default; the ones it fixes disabled, at the fixed value; the ones it does not take disabled, "not used".
  function applyMethod(root, config, method) {
    const spec = config.methods[method];
    const found = inputs(root);
    config.hypers.forEach((name) => {
      const el = found[name];
      const control = spec.controls[name];
      el.disabled = !control;
      if (control) {
        Object.assign(el, {min: control.min, max: control.max, step: control.step}); // before value: it clamps
        el.value = spec.defaults[name];
      } else if (name in spec.fixed) {
        el.value = spec.fixed[name];
        showValue(root, name, `${fmt(spec.fixed[name])} (fixed)`);
      } else {
        showValue(root, name, "not used");
      }
    });
  }

  // What the inputs say now: the method, its full hyper-parameters, and every other input as a number.
  function readState(root, config) {
    const found = inputs(root);
    const method = found.method.value;
    const spec = config.methods[method];
    const params = {...spec.defaults};
    config.hypers.forEach((name) => { if (spec.controls[name]) params[name] = Number(found[name].value); });
    Object.assign(params, spec.fixed);
    const values = {};
    Object.keys(found).forEach((name) => { if (name !== "method") values[name] = Number(found[name].value); });
    return {method, spec, params, values};
  }

  // "ε_l=0.2, ε_h=0.2, β1=0.5, β2=1": the labelled hyper-parameters the method takes or fixes, slider or not.
  function paramText(config, spec, params) {
    const used = Object.keys(config.hyperLabels).filter((name) => name in spec.defaults || name in spec.fixed);
    return used.map((name) => `${config.hyperLabels[name]}=${fmt(params[name])}`).join(", ");
  }

  // F against r, one line per sign of Â: x/y on the left (Â>0), x2/y2 on the right (Â<0).
  function weightTraces(family, params, rMax, style) {
    const r = breakpoints(params, rMax);
    return [[1, "x", "y"], [-1, "x2", "y2"]].map(([adv, xaxis, yaxis]) => ({
      type: "scatter", mode: "lines", x: r, y: r.map((x) => gradientWeight(family, x, adv, params)),
      xaxis, yaxis, legendgroup: style.name, showlegend: adv > 0, hovertemplate: "r=%{x:.3f}<br>F=%{y:.3f}",
      uid: `${style.role}${adv > 0 ? "+" : "-"}`, ...style}));
  }

  function edgeLines(params) {
    const line = {type: "line", yref: "paper", y0: 0, y1: 1, line: {dash: "dash", width: 1, color: "#888"}};
    return ["x", "x2"].flatMap((xref) => [1 - params.eps_low, 1 + params.eps_high].map(
      (x) => ({...line, xref, x0: x, x1: x})));
  }

  // The reference (PPO / GRPO) is a wide faint band drawn under the method's line: it shows where the two agree
  // (the band frames the line) and where the method keeps a gradient PPO drops (the band stays at 0).
  // The reference takes the clip interval the method is drawn with (ε_l, ε_h of the sliders, or the method's
  // fixed ones), so the two differ only in what each does outside it.
  function referenceParams(ref, params) {
    const out = {...ref.params};
    (ref.followEps || []).forEach((name) => { if (name in params) out[name] = params[name]; });
    return out;
  }

  function drawWeights(root, config, state) {
    const {spec, params} = state;
    const ref = config.reference;
    const traces = (ref ? weightTraces(ref.family, referenceParams(ref, params), config.rMax,
      {name: ref.label, role: "reference", opacity: 0.4, line: {color: ref.color, width: 6}}) : [])
      .concat(weightTraces(spec.family, params, config.rMax,
        {name: spec.label, role: "method", line: {color: spec.color, width: 2.5}}));
    const layout = {
      ...config.layout, shapes: edgeLines(params),
      title: {...config.layout.title,
              text: `Gradient weight F(r, Â) under ${spec.label}: ${paramText(config, spec, params)}`},
    };
    const gd = root.querySelector(".plotly-graph-div");
    Plotly.react(gd, traces, narrowWeights(root, gd, layout), config.plotConfig);
  }

  // On a narrow screen (a phone) the two panels of the weight figure stack, Â>0 above Â<0, each as wide as the
  // figure (side by side each would get under 170 px).
  function narrowWeights(root, gd, layout) {
    if (root.clientWidth >= NARROW) return layout;
    const height = Math.round(1.7 * layout.height);
    gd.style.height = `${height}px`;
    return {
      ...narrowTitle(root, layout), height,
      xaxis: {...layout.xaxis, domain: [0, 1]}, xaxis2: {...layout.xaxis2, domain: [0, 1]},
      yaxis: {...layout.yaxis, domain: [0.58, 1]}, yaxis2: {...layout.yaxis2, domain: [0, 0.42], showticklabels: true},
      annotations: (layout.annotations || []).map((a, k) => ({...a, x: 0.5, y: k === 0 ? 1 : 0.42})),
    };
  }

  // On a narrow screen the title wraps to the figure's width (plotly does not wrap titles), with room above.
  function narrowTitle(root, layout) {
    if (root.clientWidth >= NARROW) return layout;
    const chars = Math.max(24, Math.floor((root.clientWidth - 24) / 7.2));
    const lines = [];
    let line = "";
    layout.title.text.split(" ").forEach((word) => {
      if (line && line.length + 1 + word.length > chars) { lines.push(line); line = word; }
      else line = line ? `${line} ${word}` : word;
    });
    lines.push(line);
    return {...layout, title: {...layout.title, text: lines.join("<br>")},
            margin: {...layout.margin, t: Math.max(layout.margin.t, 40 + 18 * lines.length)}};
  }

  // The kept token's bar wears its token group's colour (token_groups.classify), the others up/down colours.
  function groupOf(config, prob, adv) {
    if (adv === 0) return "ZA";
    return `${adv > 0 ? "PA" : "NA"}&${prob < config.hpThreshold ? "LP" : "HP"}`;
  }

  // The smallest "nice" number (1, 2 or 5 times a power of ten) at or above x: the update panel's y range, so
  // that the bars fill most of the axis and the range only changes when the update crosses a step of that ladder.
  function niceCeil(x) {
    if (!(x > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(x)));
    return [1, 2, 5, 10].map((k) => k * power).find((v) => v >= x * (1 - 1e-12));
  }

  function drawUpdate(root, config, state) {
    const {spec, params, values} = state;
    const token = values.token;
    const out = softmaxUpdate(config.logits, token, values.ratio, values.adv, spec.family, params, values.lr);
    const colors = out.delta.map((d, b) => (b === token ? config.groupColors[groupOf(config, out.prob[b], values.adv)]
      : d > 0 ? config.upColor : config.downColor));
    const x = config.logits.map((_, b) => b);
    const bars = {type: "bar", x, y: out.delta, marker: {color: colors}, xaxis: "x", yaxis: "y", showlegend: false,
                  uid: "delta", name: "Δz", hovertemplate: "logit %{x}<br>Δz=%{y:.4f}<extra></extra>"};
    const after = logSoftmax(config.logits.map((z, b) => z + out.delta[b])).map(Math.exp);
    const probs = [["probBefore", "π before", out.prob, config.probColors.before],
                   ["probAfter", "π after", after, config.probColors.after]].map(([uid, name, y, color]) => ({
      type: "bar", x, y, uid, name, xaxis: "x2", yaxis: "y2", marker: {color},
      hovertemplate: `logit %{x}<br>${name}=%{y:.4f}<extra></extra>`}));
    const narrow = root.clientWidth < NARROW; // a phone: the logit's index alone (π is in the lower panel)
    const ticks = out.prob.map((p, b) => `${b === token ? "▶ " : ""}${narrow ? b : `π=${p.toFixed(3)}`}`);
    const reach = niceCeil(1.1 * Math.max(...out.delta.map(Math.abs)));
    const layout = {
      ...config.layout, xaxis: {...config.layout.xaxis, tickvals: x, ticktext: ticks},
      xaxis2: {...config.layout.xaxis2, tickvals: x, ticktext: x.map((b) => (b === token ? `▶ ${b}` : `${b}`))},
      yaxis: {...config.layout.yaxis, range: [-reach, reach]},
      title: {...config.layout.title,
              text: `One update of one softmax under ${spec.label}: ${paramText(config, spec, params)}`},
    };
    Plotly.react(root.querySelector(".plotly-graph-div"), [bars, ...probs], narrowTitle(root, layout), config.plotConfig);
    showReadout(root, out);
  }

  function showReadout(root, out) {
    const field = (name) => root.querySelector(`[data-field="${name}"]`);
    field("weight").textContent = out.weight.toFixed(3);
    field("dHPred").textContent = signed(out.dHPred, 5);
    field("dHMeas").textContent = signed(out.dHMeas, 5);
  }

  const DRAW = {weight: drawWeights, update: drawUpdate};

  // The value next to every enabled slider (a disabled one keeps applyMethod's "fixed" / "not used").
  function showValues(root) {
    root.querySelectorAll("input[type=range][data-input]").forEach((el) => {
      if (!el.disabled) showValue(root, el.dataset.input, fmt(Number(el.value)));
    });
  }

  function redraw(root, config) {
    showValues(root);
    DRAW[config.kind](root, config, readState(root, config));
  }

  // Wire one figure (idempotent: a re-run script or a second call leaves it as it is). Without plotly.js (a
  // kernel's JupyterLab) the figure's note stays visible and nothing else happens.
  function mount(root) {
    if (!root || root.dataset.cegppoMounted) return;
    if (!window.Plotly) {
      // The book loads plotly.js deferred: it runs after this inline script, before DOMContentLoaded. Try once more
      // then; without plotly.js (a kernel's JupyterLab) the note stays.
      if (document.readyState === "loading" && !root.dataset.cegppoWaiting) {
        root.dataset.cegppoWaiting = "1";
        document.addEventListener("DOMContentLoaded", () => mount(root));
      }
      return;
    }
    root.dataset.cegppoMounted = "1";
    const config = JSON.parse(root.querySelector("script.cegppo-live-config").textContent);
    root.querySelector(".cegppo-live-note").hidden = true;
    root.querySelector(".cegppo-live-body").hidden = false;
    const found = inputs(root);
    applyMethod(root, config, found.method.value);
    found.method.addEventListener("change", () => {
      applyMethod(root, config, found.method.value);
      redraw(root, config);
    });
    Object.entries(found).forEach(([name, el]) => {  // a select tells "change", a range input every "input"
      if (name !== "method") el.addEventListener(el.tagName === "SELECT" ? "change" : "input", () => redraw(root, config));
    });
    redraw(root, config);
  }

  return {gradientWeight, softmaxUpdate, entropy, breakpoints, niceCeil, mount};
}
