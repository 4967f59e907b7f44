// The mlswarm dashboard: plain JavaScript, served by ml_controller itself, talking to the same
// JSON API as curl and the mlswarm CLI. Nothing is fetched from anywhere else.
'use strict';

const TOKEN_KEY = 'mlswarm.api_token';
const $ = (id) => document.getElementById(id);
const state = { config: { auth: false, public_reads: false }, selected: null, datasets: {},
                models: [], jobs: [], paused: false, sweeps: [], sweep: null };

// ---- the API -----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers.Authorization = 'Bearer ' + token();  // a header, never a URL
  const res = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401 || res.status === 403) {
    askToken(res.status === 401
      ? 'The controller answered 401: it needs its API token.'
      : 'The controller answered 403: this token is not the controller\'s API token.');
    throw new ApiError(res.status, body);
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function jsonPost(path, body) {
  return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

// ---- the token ---------------------------------------------------------------------------------
function askToken(reason) {
  state.paused = true;
  $('token-reason').textContent = reason;
  $('token-button').hidden = false;
  const dialog = $('token-dialog');
  if (!dialog.open) dialog.showModal();
  $('token-input').focus();
}

function setupToken() {
  $('token-form').addEventListener('submit', () => {
    sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
    $('token-input').value = '';
    state.paused = false;
    refreshAll();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-input').value = '';
  });
  $('token-button').addEventListener('click', () => askToken('Replace or forget the API token of this tab.'));
}

// ---- small helpers -----------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return '–';
  s = Math.round(s);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

function fmtAgo(unixSeconds) {
  if (!unixSeconds) return '–';
  return fmtSeconds(Math.max(0, Date.now() / 1000 - unixSeconds)) + ' ago';
}

const fmtNumber = (x, digits = 0) => (x === null || x === undefined) ? '–'
  : Number(x).toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

function setConnection(ok, text) {
  const pill = $('conn');
  pill.textContent = text;
  pill.className = 'pill ' + (ok ? 'ok' : 'bad');
}

// ---- trainers and jobs -------------------------------------------------------------------------
function renderTrainers(trainers) {
  const body = $('trainers').tBodies[0];
  body.replaceChildren(...trainers.map((t) => el('tr', {},
    el('td', {}, t.address), el('td', {}, el('span', { class: 'pill ' + (t.state === 'ready' ? 'ok' : 'bad') }, t.state)),
    el('td', {}, t.capacity), el('td', {}, t.running), el('td', {}, fmtAgo(t.last_seen)))));
  $('trainer-count').textContent = '(' + trainers.length + ')';
  $('no-trainers').hidden = trainers.length > 0;
}

function jobLine(j) {
  const parts = [];
  if (j.epoch > 0) {  // the epoch in progress (1-based), or the last one
    parts.push(`epoch ${j.epoch}/${j.epochs}`);
    if (j.steps_per_epoch) parts.push(`step ${j.step}/${j.steps_per_epoch}`);
  }
  if (j.loss !== null && j.loss !== undefined) parts.push('loss ' + fmtNumber(j.loss, 4));
  if (j.accuracy !== null && j.accuracy !== undefined) parts.push('accuracy ' + fmtNumber(j.accuracy, 4));
  if (j.state === 'running') {
    parts.push(fmtNumber(j.images_per_s) + ' images/s');
    parts.push('ETA ' + fmtSeconds(j.eta_s));
  }
  if (j.world_size > 1) parts.push(j.world_size + ' trainers');
  if (j.error) parts.push(j.failure ? `${j.failure}: ${j.error}` : j.error);
  return parts.join(' · ');
}

function renderJobs(jobs) {
  const shown = jobs.slice().sort((a, b) => (b.created_at || 0) - (a.created_at || 0)).slice(0, 20);
  $('jobs').replaceChildren(...shown.map((j) => {
    const bar = el('div', { class: 'bar-fill' });
    bar.style.width = (100 * Math.max(0, Math.min(1, j.progress || 0))).toFixed(1) + '%';
    const active = j.state === 'queued' || j.state === 'running';
    return el('div', { class: 'job ' + j.state, 'data-job': j.job_id },
      el('div', { class: 'job-head' },
        el('a', { href: '#', class: 'model-link', onclick: (e) => { e.preventDefault(); selectModel(j.model_id); } }, j.model_id),
        el('span', { class: 'pill ' + j.state }, j.state),
        el('span', { class: 'muted mono' }, j.job_id),
        active ? el('button', { type: 'button', class: 'cancel', onclick: () => cancelJob(j.job_id) }, 'cancel') : ''),
      el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
                  'aria-valuenow': String(Math.round(100 * (j.progress || 0))) }, bar),
      el('div', { class: 'job-line' }, jobLine(j)));
  }));
  $('no-jobs').hidden = jobs.length > 0;
}

async function cancelJob(id) {
  if (!confirm(`Cancel job ${id}?`)) return;
  try {
    await api('/jobs/' + encodeURIComponent(id), { method: 'DELETE' });
    refreshStatus();
  } catch (e) {
    alert('cancel failed: ' + e.message);
  }
}

async function refreshStatus() {
  const status = await api('/status');
  renderTrainers(status.trainers || []);
  state.jobs = status.jobs || [];
  renderJobs(state.jobs);
  if (status.serving) renderServing(status.serving);
  const c = status.controller;
  $('role').textContent = c ? `${c.role}${c.term ? ', term ' + c.term : ''}` : '';
  setConnection(true, 'connected');
}

// ---- serving: what the batcher chose for each model, against the latency target ---------------
function renderServing(serving) {
  const target = serving.p99_target_ms;
  $('serving-summary').textContent = `p99 target ${fmtNumber(target, 1)} ms (PREDICT_P99_TARGET_MS) · ` +
    `${serving.loaded_versions} version(s) loaded, ${fmtNumber(serving.loaded_bytes / 1e6, 1)} MB · ` +
    `${serving.model_unloads} unloaded · ${serving.queued} queued`;
  const models = serving.models || [];
  $('serving').tBodies[0].replaceChildren(...models.map((m) => el('tr', {},
    el('td', {}, m.model_id), el('td', {}, m.batch_cap), el('td', {}, `${fmtNumber(m.wait_us / 1000, 2)} ms`),
    el('td', { class: m.p99_ms > target ? 'bad' : '' }, m.p99_ms === null ? '–' : `${fmtNumber(m.p99_ms, 2)} ms`),
    el('td', {}, fmtNumber(m.mean_batch, 1)), el('td', {}, m.requests))));
  $('no-serving').hidden = models.length > 0;
}

// ---- models and their curves -------------------------------------------------------------------
function renderModels(models) {
  state.models = models.slice().sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
  $('models').tBodies[0].replaceChildren(...state.models.map((m) => el('tr',
    { class: 'clickable' + (m.model_id === state.selected ? ' selected' : ''), onclick: () => selectModel(m.model_id) },
    el('td', {}, m.model_id), el('td', {}, m.model_type), el('td', {}, m.dataset), el('td', {}, m.version),
    el('td', {}, fmtNumber(m.accuracy, 4)), el('td', {}, fmtAgo(m.updated_at)))));
  $('no-models').hidden = models.length > 0;
  const select = $('try-model');
  const current = select.value;
  select.replaceChildren(...state.models.map((m) => el('option', { value: m.model_id }, m.model_id)));
  if (current && state.models.some((m) => m.model_id === current)) select.value = current;
  if (!state.selected && state.models.length) selectModel(state.models[0].model_id, false);
}

async function refreshModels() {
  renderModels((await api('/models')).models || []);
}

function selectModel(id, scroll = true) {
  state.selected = id;
  $('try-model').value = id;
  refreshModelDetail().catch(() => {});
  if (scroll) $('models-section').scrollIntoView({ behavior: 'smooth' });
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/// The charts' frame (320x180, margins L=44 R=10 T=10 B=26): the plot area and five labelled
/// horizontal grid lines from lo to hi, `y` mapping a value to its height.
function plotFrame(y, lo, hi, digits) {
  const W = 320, H = 180, L = 44, R = 10, T = 10, B = 26;
  const nodes = [svg('rect', { x: L, y: T, width: W - L - R, height: H - T - B, class: 'plot' })];
  for (let k = 0; k <= 4; ++k) {
    const v = lo + ((hi - lo) * k) / 4;
    nodes.push(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    const label = svg('text', { x: L - 4, y: y(v) + 3, class: 'tick', 'text-anchor': 'end' });
    label.textContent = v.toFixed(digits);
    nodes.push(label);
  }
  return nodes;
}

/// A line chart of one or more series over epochs 1..n, drawn as SVG (no chart library).
function drawChart(target, series, yFixed) {
  const W = 320, H = 180, L = 44, R = 10, T = 10, B = 26;
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && isFinite(v));
  const n = Math.max(1, ...series.map((s) => s.values.length));
  let lo = yFixed ? yFixed[0] : Math.min(...values), hi = yFixed ? yFixed[1] : Math.max(...values);
  if (!values.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi += 0.5; lo = Math.max(0, lo - 0.5); }
  const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const nodes = plotFrame(y, lo, hi, hi - lo < 0.1 ? 3 : 2);
  const step = Math.max(1, Math.ceil(n / 8));
  for (let i = 0; i < n; i += step) {
    const label = svg('text', { x: x(i), y: H - 8, class: 'tick', 'text-anchor': 'middle' });
    label.textContent = String(i + 1);
    nodes.push(label);
  }
  for (const s of series) {
    const pts = s.values.map((v, i) => [x(i), y(v)]);
    if (pts.length > 1) nodes.push(svg('polyline', { points: pts.map((p) => p.join(',')).join(' '), class: 'line ' + s.cls }));
    for (const [px, py] of pts) nodes.push(svg('circle', { cx: px, cy: py, r: 3, class: 'dot ' + s.cls }));
  }
  target.replaceChildren(...nodes);
  target.dataset.points = String(Math.max(0, ...series.map((s) => s.values.length)));
}

async function refreshModelDetail() {
  const id = state.selected;
  if (!id) return;
  // A model is listed once its first epoch is published; until then there is nothing to ask for.
  const meta = state.models.some((m) => m.model_id === id) ? await api('/models/' + encodeURIComponent(id)) : null;
  if (id !== state.selected) return;
  $('model-detail').hidden = false;
  $('model-title').textContent = id;
  const epochs = meta ? meta.epochs || [] : [];
  drawChart($('loss-chart'), [{ values: epochs.map((e) => e.train_loss), cls: 'train' },
                              { values: epochs.map((e) => e.test_loss), cls: 'test' }]);
  drawChart($('accuracy-chart'), [{ values: epochs.map((e) => e.accuracy), cls: 'acc' }]);
  renderPerClass(meta);
  const running = state.jobs.find((j) => j.model_id === id && (j.state === 'running' || j.state === 'queued'));
  const last = epochs[epochs.length - 1];
  $('model-summary').textContent = !meta ? 'No epoch finished yet.'
    : `${meta.model_type} on ${meta.dataset}, version ${meta.version} (epochs seen)` +
      (last ? `, test accuracy ${fmtNumber(last.accuracy, 4)}` : '') +
      (running ? ` · training (job ${running.job_id}, ${running.state})` : '');
}

/// Per-class accuracy as bars (worst first) and the confusion matrix, when the model has them.
function renderPerClass(meta) {
  const pc = meta && meta.per_class;
  $('per-class').hidden = !pc;
  if (!pc) return;
  const names = meta.class_names;
  const range = meta.spec && meta.spec.test_idxs;  // evaluated on a part of the test split
  $('per-class-split').textContent = range
    ? `(test images ${fmtNumber(range[0])} to ${fmtNumber(range[1] - 1)})` : '(test split)';
  const order = pc.accuracy.map((a, i) => i).sort((a, b) => pc.accuracy[a] - pc.accuracy[b]);
  $('per-class-bars').replaceChildren(...order.map((i) => {
    const fill = el('div', { class: 'bar-fill' });
    fill.style.width = (100 * pc.accuracy[i]).toFixed(1) + '%';
    return el('div', { class: 'prob' }, el('span', { class: 'prob-name' }, names[i]), el('div', { class: 'bar' }, fill),
      el('span', { class: 'prob-value' }, (100 * pc.accuracy[i]).toFixed(1) + '%'));
  }));
  const max = Math.max(1, ...pc.confusion.flat());
  const head = el('tr', {}, el('th', {}, ''), ...names.map((n, j) => el('th', { title: n }, String(j))));
  const rows = pc.confusion.map((row, i) => el('tr', {}, el('th', { title: names[i] }, `${i} ${names[i]}`),
    ...row.map((v, j) => {
      const cell = el('td', { class: i === j ? 'diag' : '' }, v);
      cell.style.backgroundColor = `rgb(37 99 235 / ${(v / max).toFixed(3)})`;
      if (v / max > 0.5) cell.style.color = '#fff';
      return cell;
    })));
  $('confusion').replaceChildren(head, ...rows);
}

// ---- try a model -------------------------------------------------------------------------------
function renderPrediction(classes, probabilities, answer) {
  const order = probabilities.map((p, i) => i).sort((a, b) => probabilities[b] - probabilities[a]);
  $('try-answer').textContent = answer;
  $('try-bars').replaceChildren(...order.map((i) => {
    const fill = el('div', { class: 'bar-fill' });
    fill.style.width = (100 * probabilities[i]).toFixed(1) + '%';
    return el('div', { class: 'prob' }, el('span', { class: 'prob-name' }, classes[i] || String(i)),
      el('div', { class: 'bar' }, fill), el('span', { class: 'prob-value' }, (100 * probabilities[i]).toFixed(1) + '%'));
  }));
}

function drawPixels(example) { drawPixelsOn($('try-canvas'), example); }

function drawPixelsOn(canvas, example) {
  // example: [channels][height][width] in 0..1
  const ctx = canvas.getContext('2d');
  const c = example.length, h = example[0].length, w = example[0][0].length;
  const img = ctx.createImageData(w, h);
  for (let yy = 0; yy < h; ++yy) for (let xx = 0; xx < w; ++xx) {
    const at = 4 * (yy * w + xx);
    for (let k = 0; k < 3; ++k) img.data[at + k] = Math.round(255 * example[c === 3 ? k : 0][yy][xx]);
    img.data[at + 3] = 255;
  }
  const tmp = document.createElement('canvas');
  tmp.width = w; tmp.height = h;
  tmp.getContext('2d').putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function modelMeta(id) { return state.models.find((m) => m.model_id === id); }

async function tryExample() {
  const id = $('try-model').value;
  const model = modelMeta(id);
  if (!model) { $('try-answer').textContent = 'Train a model first.'; return; }
  try {
    const info = await datasetInfo(model.dataset);
    const start = Math.floor(Math.random() * info.test_size);
    const ex = await api(`/datasets/${encodeURIComponent(model.dataset)}/examples?split=test&start=${start}&count=1`);
    drawPixels(ex.examples[0]);
    const out = await jsonPost('/predict', { model_id: id, examples: ex.examples });
    const guess = out.class_tags[0];
    renderPrediction(info.class_tags, out.probabilities[0],
      `${guess} (test example ${start}, labelled ${ex.class_tags[0]}${guess === ex.class_tags[0] ? ', right' : ', wrong'})`);
  } catch (e) {
    $('try-answer').textContent = 'failed: ' + e.message;
  }
}

async function tryUpload() {
  const file = $('try-file').files[0];
  const id = $('try-model').value;
  if (!file) return;
  if (!id) { $('try-answer').textContent = 'Train a model first.'; return; }
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    const ctx = $('try-canvas').getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, 112, 112);
    ctx.drawImage(image, 0, 0, 112, 112);
    URL.revokeObjectURL(url);
  };
  image.src = url;
  const form = new FormData();
  form.append('image', file);
  try {
    const out = await api('/classify?model_id=' + encodeURIComponent(id), { method: 'POST', body: form });
    renderPrediction(out.classes, out.probabilities, `${out.class} (${file.name})`);
  } catch (e) {
    $('try-answer').textContent = 'failed: ' + e.message;
  }
}

async function datasetInfo(name) {
  if (!state.datasets[name]) state.datasets[name] = await api('/datasets/' + encodeURIComponent(name));
  return state.datasets[name];
}

// ---- start a job -------------------------------------------------------------------------------
function defaultModelId(dataset) {
  const d = new Date(), pad = (n) => String(n).padStart(2, '0');
  return `${dataset.replace(/[^A-Za-z0-9]/g, '').slice(0, 12) || 'model'}-${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
}

async function setupTrainForm() {
  const select = $('f-dataset');
  const list = (await api('/datasets')).datasets || [];
  select.replaceChildren(...list.map((d) => el('option', { value: d.name }, `${d.name} (${fmtNumber(d.train_size)} images)`)));
  for (const d of list) state.datasets[d.name] = d;
  if (list.some((d) => d.name === 'fashion-mnist')) select.value = 'fashion-mnist';
  if (!$('f-model').value) $('f-model').value = defaultModelId(select.value || 'model');
  select.addEventListener('change', () => { $('f-model').value = defaultModelId(select.value); });
}

async function submitJob(event) {
  event.preventDefault();
  const f = (id) => $(id).value.trim();
  const spec = {
    model_id: f('f-model'), dataset: f('f-dataset'), model_type: f('f-type'),
    trainers: Number(f('f-trainers')),
    train_opts: { epochs: Number(f('f-epochs')), batch_size: Number(f('f-batch') || 128) },
  };
  if (f('f-examples')) spec.example_idxs = [0, Number(f('f-examples'))];
  if (f('f-test-examples')) spec.test_idxs = [0, Number(f('f-test-examples'))];
  $('f-submit').disabled = true;
  try {
    const out = await jsonPost('/train', spec);
    $('train-result').textContent = `job ${out.job_id} ${out.state || 'queued'}`;
    state.selected = spec.model_id;
    $('f-model').value = defaultModelId(spec.dataset);
    refreshStatus();
  } catch (e) {
    $('train-result').textContent = 'refused: ' + e.message;
  } finally {
    $('f-submit').disabled = false;
  }
}

// ---- sweeps ------------------------------------------------------------------------------------
function renderSweeps(sweeps) {
  state.sweeps = sweeps;
  $('sweeps').tBodies[0].replaceChildren(...sweeps.slice().reverse().map((s) => el('tr',
    { class: 'clickable' + (s.sweep_id === state.sweep ? ' selected' : ''), onclick: () => selectSweep(s.sweep_id) },
    el('td', {}, s.sweep_id), el('td', {}, el('span', { class: 'pill ' + s.state }, s.state)),
    el('td', {}, s.spec.scheduler.type), el('td', {}, s.spec.trials),
    el('td', {}, s.best ? 'trial ' + s.best.trial : '-'), el('td', {}, s.best ? fmtNumber(s.best.accuracy, 4) : '-'),
    el('td', {}, Math.round(s.trainer_seconds)))));
  $('no-sweeps').hidden = sweeps.length > 0;
  if (!state.sweep && sweeps.length) selectSweep(sweeps[sweeps.length - 1].sweep_id);
}

function selectSweep(id) {
  state.sweep = id;
  refreshSweepDetail().catch(() => {});
}

function paramText(params) {
  return Object.entries(params).map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(3) : v}`).join(' ');
}

/// Accuracy (y) against one parameter (x) as an SVG scatter: a log axis for log_uniform, one
/// column per value for a choice; each dot coloured by the furthest rung its trial finished.
function drawParamChart(target, name, space, trials) {
  const W = 320, H = 180, L = 44, R = 10, T = 10, B = 26;
  const done = trials.filter((t) => t.accuracy !== null);
  const ys = done.map((t) => t.accuracy);
  let lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
  if (hi - lo < 1e-6) { hi += 0.01; lo -= 0.01; }
  const choice = space.type === 'choice';
  const logx = space.type === 'log_uniform';
  const f = (v) => (logx ? Math.log10(v) : Number(v));
  const xlo = choice ? 0 : f(space.min), xhi = choice ? space.values.length - 1 : f(space.max);
  const pos = (v) => (choice ? space.values.findIndex((c) => JSON.stringify(c) === JSON.stringify(v)) : f(v));
  const P = 12;  // the dots at either end of the range stay off the frame
  const x = (v) => L + P + (xhi === xlo ? (W - L - R) / 2 - P : ((pos(v) - xlo) * (W - L - R - 2 * P)) / (xhi - xlo));
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const nodes = plotFrame(y, lo, hi, 3);
  const ticks = choice ? space.values : [space.min, space.max];
  for (const v of ticks) {
    const label = svg('text', { x: x(v), y: H - 8, class: 'tick', 'text-anchor': 'middle' });
    label.textContent = typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(2) : String(v);
    nodes.push(label);
  }
  for (const t of done) {
    const dot = svg('circle', { cx: x(t.params[name]), cy: y(t.accuracy), r: 4,
                                class: 'dot rung' + Math.min(2, t.metrics.length - 1) });
    const tip = svg('title', {});
    tip.textContent = `trial ${t.trial}: ${fmtNumber(t.accuracy, 4)} after ${t.epochs} epochs`;
    dot.append(tip);
    nodes.push(dot);
  }
  target.replaceChildren(...nodes);
  target.dataset.points = String(done.length);
}

async function refreshSweepDetail() {
  const id = state.sweep;
  if (!id) return;
  const s = await api('/sweeps/' + encodeURIComponent(id));
  if (id !== state.sweep) return;
  $('sweep-detail').hidden = false;
  $('sweep-title').textContent = id;
  const sched = s.spec.scheduler;
  $('sweep-summary').textContent = `${s.state} · ${sched.type}` +
    (sched.type === 'asha' ? ` (rungs of ${s.rungs.join(', ')} epochs)` : ` (${sched.epochs} epochs each)`) +
    ` · ${s.trials.length} of ${s.spec.trials} trials started · ${Math.round(s.trainer_seconds)} trainer-seconds` +
    (s.best ? ` · best: trial ${s.best.trial}, ${fmtNumber(s.best.accuracy, 4)}` +
      (s.best.published_as ? `, served as model ${s.best.published_as}` : '') : '');
  const byTrial = new Map(s.trials.map((t) => [t.trial, t]));
  const order = s.leaderboard.concat(s.trials.map((t) => t.trial).filter((t) => !s.leaderboard.includes(t)));
  $('sweep-trials').tBodies[0].replaceChildren(...order.map((n, i) => {
    const t = byTrial.get(n);
    return el('tr', { class: 'trial' }, el('td', {}, t.accuracy !== null ? i + 1 : '-'), el('td', {}, t.trial),
      el('td', {}, el('span', { class: 'pill ' + t.state }, t.state)), el('td', {}, t.rung), el('td', {}, t.epochs),
      el('td', {}, fmtNumber(t.accuracy, 4)), el('td', { class: 'mono' }, paramText(t.params)));
  }));
  const charts = Object.entries(s.spec.space).map(([name, space]) => {
    const chart = svg('svg', { viewBox: '0 0 320 180', role: 'img', class: 'param-chart',
                               'aria-label': `test accuracy against ${name}`, 'data-param': name });
    drawParamChart(chart, name, space, s.trials);
    return el('figure', {}, el('figcaption', {}, `accuracy against ${name}` + (space.type === 'log_uniform' ? ' (log scale)' : '')), chart);
  });
  $('sweep-charts').replaceChildren(...charts);
}

async function refreshSweeps() {
  renderSweeps((await api('/sweeps')).sweeps || []);
  await refreshSweepDetail();
}

// ---- deployments -------------------------------------------------------------------------------
const LIVE = ['evaluating', 'shadow', 'canary'];
function live(d) { return d.rollout && LIVE.includes(d.rollout.state); }
function modelText(m) { return m ? `${m.model_id} v${m.version}` : '-'; }

function renderDeployments(deployments) {
  state.deployments = deployments;
  $('deployments').tBodies[0].replaceChildren(...deployments.map((d) => el('tr',
    { class: 'clickable' + (d.name === state.deployment ? ' selected' : ''), onclick: () => selectDeployment(d.name) },
    el('td', {}, d.name), el('td', {}, modelText(d.stable)),
    el('td', {}, d.rollout ? modelText(d.rollout.spec) : '-'),
    el('td', {}, d.rollout ? el('span', { class: 'pill ' + d.rollout.state }, d.rollout.state) : '-'),
    el('td', {}, live(d) ? d.rollout.weight + '%' : '-'),
    el('td', {}, live(d) ? el('button', { type: 'button', class: 'abort',
      onclick: (e) => { e.stopPropagation(); abortRollout(d.name); } }, 'abort') : ''))));
  $('no-deployments').hidden = deployments.length > 0;
  if (!state.deployment && deployments.length) selectDeployment(deployments[0].name);
}

function selectDeployment(name) {
  state.deployment = name;
  refreshDeploymentDetail().catch(() => {});
}

async function abortRollout(name) {
  if (!confirm(`Abort the rollout on ${name}? Its stable version serves everything again at once.`)) return;
  try {
    await api('/deployments/' + encodeURIComponent(name) + '/rollout', { method: 'DELETE' });
  } catch (e) {
    alert('not aborted: ' + e.message);
  }
  await refreshDeployments();
}

/// The candidate's weight over time: a step line from the rollout's history (and now, if live).
function drawWeightChart(target, rollout) {
  const W = 320, H = 140, L = 36, R = 10, T = 10, B = 22;
  const events = rollout.history.slice();
  const t0 = events[0].at;
  const end = LIVE.includes(rollout.state) ? Date.now() / 1000 : events[events.length - 1].at;
  const span = Math.max(1, end - t0);
  const x = (t) => L + ((t - t0) / span) * (W - L - R);
  const y = (w) => T + (H - T - B) * (1 - w / 100);
  const nodes = plotFrame(y, 0, 100, 0);
  let d = `M ${x(t0)} ${y(0)}`;
  let weight = 0;
  for (const e of events) {
    d += ` L ${x(e.at)} ${y(weight)} L ${x(e.at)} ${y(e.weight)}`;
    weight = e.weight;
  }
  d += ` L ${x(end)} ${y(weight)}`;
  nodes.push(svg('path', { d, class: 'line weight' }));
  const label = svg('text', { x: W - R, y: H - 6, class: 'tick', 'text-anchor': 'end' });
  label.textContent = fmtSeconds(span);
  nodes.push(label);
  target.replaceChildren(...nodes);
  target.dataset.steps = String(events.length);
}

async function refreshDeploymentDetail() {
  const name = state.deployment;
  if (!name) return;
  const d = await api('/deployments/' + encodeURIComponent(name));
  if (name !== state.deployment) return;
  $('deployment-detail').hidden = false;
  $('deployment-title').textContent = name;
  const r = d.rollout;
  $('deployment-summary').textContent = `serves ${modelText(d.stable)}` +
    (r ? ` · rollout of ${modelText(r.spec)}: ${r.state}` + (live(d) ? `, weight ${r.weight}%` : '') : ' · no rollout');
  $('deployment-reason').textContent = r && r.reason ? r.reason : '';
  $('deployment-reason').className = r && r.state === 'rolled_back' ? 'error' : '';
  const gates = r ? (r.phase_gates || r.gates || []) : [];
  $('deployment-gates').tBodies[0].replaceChildren(...gates.map((g) => el('tr', { class: g.passed ? '' : 'failed' },
    el('td', {}, g.gate), el('td', {}, fmtNumber(g.figure, 4)), el('td', {}, (g.at_most ? '≤ ' : '≥ ') + fmtNumber(g.limit, 4)),
    el('td', {}, g.passed ? 'ok' : 'failed'))));
  if (r) drawWeightChart($('weight-chart'), r);
  $('deployment-history').tBodies[0].replaceChildren(...(r ? r.history : []).map((e) => el('tr', {},
    el('td', {}, fmtAgo(e.at)), el('td', {}, el('span', { class: 'pill ' + e.state }, e.state)),
    el('td', {}, e.weight + '%'), el('td', {}, e.reason))));
}

async function refreshDeployments() {
  renderDeployments((await api('/deployments')).deployments || []);
  await refreshDeploymentDetail();
}

// ---- datasets -----------------------------------------------------------------------------------
function renderDatasets(list) {
  state.datasetList = list;
  $('datasets').tBodies[0].replaceChildren(...list.map((d) => el('tr',
    { class: 'clickable' + (d.name === state.dataset ? ' selected' : ''), onclick: () => selectDataset(d.name) },
    el('td', {}, d.name), el('td', {}, (d.input_shape || []).join('×')), el('td', {}, String(d.num_classes)),
    el('td', {}, fmtNumber(d.train_size)), el('td', {}, fmtNumber(d.test_size)), el('td', {}, d.format))));
}

function selectDataset(name) {
  state.dataset = name;
  renderDatasets(state.datasetList || []);
  refreshDatasetDetail().catch(() => {});
}

/// A dataset's classes with their counts, the files its scan skipped, and a few of its images
/// (evenly spaced over the training split, so that several classes show).
async function refreshDatasetDetail() {
  const name = state.dataset;
  const d = await api('/datasets/' + encodeURIComponent(name));
  if (name !== state.dataset) return;
  $('dataset-detail').hidden = false;
  $('dataset-title').textContent = name;
  $('dataset-summary').textContent = `${(d.input_shape || []).join('×')} · ${fmtNumber(d.train_size)} train, ` +
    `${fmtNumber(d.test_size)} test images` + (d.path ? ` · HOME_DIR/${d.path} · test split: ${d.test_split}` : '');
  const classes = d.classes || (d.class_tags || []).map((c) => ({ name: c }));
  $('dataset-classes').tBodies[0].replaceChildren(...classes.map((c) => el('tr', {},
    el('td', {}, c.name), el('td', {}, c.train === undefined ? '-' : fmtNumber(c.train)),
    el('td', {}, c.test === undefined ? '-' : fmtNumber(c.test)))));
  const skipped = d.skipped || [];
  $('dataset-skipped').hidden = skipped.length === 0;
  $('dataset-skipped').tBodies[0].replaceChildren(...skipped.map((f) => el('tr', {},
    el('td', { class: 'mono' }, f.path), el('td', {}, f.why))));
  const shown = Math.min(8, d.train_size);
  const figures = [];
  for (let i = 0; i < shown; ++i) {
    const start = Math.floor((i * d.train_size) / shown);
    const ex = await api(`/datasets/${encodeURIComponent(name)}/examples?split=train&start=${start}&count=1`);
    if (name !== state.dataset) return;
    const canvas = el('canvas', { width: 56, height: 56 });
    drawPixelsOn(canvas, ex.examples[0]);
    figures.push(el('figure', {}, canvas, el('figcaption', {}, ex.class_tags[0])));
  }
  $('dataset-thumbs').replaceChildren(...figures);
}

async function refreshDatasets() {
  renderDatasets((await api('/datasets')).datasets || []);
}

// ---- the loop ----------------------------------------------------------------------------------
let tick = 0;
async function refreshAll() {
  if (state.paused) return;
  try {
    await refreshStatus();
    const listed = (id) => state.models.some((m) => m.model_id === id);
    const unlisted = state.jobs.some((j) => j.state === 'running' && !listed(j.model_id));
    const epochs = state.jobs.map((j) => `${j.job_id}:${j.state}:${j.epoch}`).join(' ');
    if (tick % 3 === 0 || unlisted || epochs !== state.epochs) await refreshModels();  // new versions
    state.epochs = epochs;
    await refreshModelDetail();
    if (tick % 2 === 0) await refreshSweeps();
    await refreshDeployments();
    if (tick % 10 === 0) await refreshDatasets();
    if (!$('f-dataset').options.length) await setupTrainForm();
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 403)) {
      setConnection(false, e instanceof ApiError ? 'error ' + e.status : 'unreachable');
    }
  }
  tick += 1;
}

async function start() {
  setupToken();
  $('train-form').addEventListener('submit', submitJob);
  $('try-example').addEventListener('click', tryExample);
  $('try-file').addEventListener('change', tryUpload);
  try {
    const res = await fetch('/ui/config.json', { cache: 'no-store' });
    state.config = await res.json();
    $('footer').textContent = `ml_controller ${state.config.version || ''}`;
  } catch (e) {
    setConnection(false, 'unreachable');
  }
  // Ask before the first call instead of collecting a 401.
  if (state.config.auth && !state.config.public_reads && !token()) {
    askToken('This controller has an API token (API_TOKEN_FILE).');
  } else {
    $('token-button').hidden = !state.config.auth;
  }
  refreshAll();
  setInterval(refreshAll, 1000);
}

document.addEventListener('DOMContentLoaded', start);
