// knlp dashboard: the pages. Plain JavaScript, no build step; charts with uPlot (npm package
// uplot, copied by `make deps`). Everything comes from the knlp binary's /api/* (docs/dashboard.md).
"use strict";

const POLL_MS = 2000;
const COLORS = ["#3a7bd5", "#d5533a", "#2e9d5b", "#9b59b6", "#e0a100", "#16a2b8", "#7f8c8d", "#c0392b"];
let timer = null;
let charts = {};

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const num = (v, d = 4) =>
	v === null || v === undefined || Number.isNaN(v) ? "-" : Number.isInteger(v) && Math.abs(v) < 1e9 ? String(v) : Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : (+v).toFixed(d);
const tick = (v) => (v === null ? "" : v === 0 ? "0" : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-2 ? v.toExponential(1) : String(+v.toPrecision(6)));
const cell = (v, col = "", d = 4) => `<td class="num"${col ? ` data-col="${col}"` : ""} data-value="${v === null || v === undefined ? "" : esc(String(v))}">${num(v, d)}</td>`;
const dur = (s) => (s === undefined || s === null ? "-" : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);

// A self-contained report (knlp dashboard --export) carries the API's answers in
// window.KNLP_SNAPSHOT and never polls.
const SNAP = window.KNLP_SNAPSHOT || null;

async function api(path) {
	if (SNAP) {
		const u = new URL(path, "http://x");
		const id = u.searchParams.get("id");
		const key = u.pathname === "/api/runs" ? "runs" : `${u.pathname.slice(5)}:${id}`;
		if (!(key in SNAP)) throw new Error(`${key}: not in this report`);
		if (u.pathname === "/api/run" && +u.searchParams.get("since") > 0) return { ...SNAP[key], records: [], offset: +u.searchParams.get("since"), reset: false };
		return SNAP[key];
	}
	const r = await fetch(path, { cache: "no-store" });
	if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
	return r.json();
}

function setLive(text) {
	$("#live").textContent = text;
}

function stopPolling() {
	if (timer) clearTimeout(timer);
	timer = null;
	for (const c of Object.values(charts)) c.destroy();
	charts = {};
}

function poll(fn) {
	const step = async () => {
		try {
			await fn();
			setLive(`updated ${new Date().toLocaleTimeString()}`);
		} catch (e) {
			setLive(`error: ${e.message}`);
		}
		if (!SNAP) timer = setTimeout(step, POLL_MS);
		else setLive(`report of ${new Date(SNAP.runs.now * 1000).toLocaleString()}`);
	};
	step();
}

// A chart in `host` keyed by `key`: created once, then fed new data (zoom is kept).
function plot(host, key, title, x, series, opts = {}) {
	const data = [x, ...series.map((s) => s.values)];
	if (charts[key]) {
		charts[key].setData(data, false);
		charts[key].redraw(false, true);
		return;
	}
	const box = document.createElement("div");
	box.className = "chart";
	box.dataset.chart = key;
	box.innerHTML = `<h3>${esc(title)}</h3>`;
	host.appendChild(box);
	charts[key] = new uPlot(
		{
			width: opts.width || 460,
			height: opts.height || 230,
			scales: { x: { time: false }, y: { distr: opts.logY ? 3 : 1 } },
			axes: [{ label: opts.xLabel || "step", values: (u, vals) => vals.map(tick), ...(opts.integerX ? { incrs: [1, 2, 5, 10, 20, 50, 100] } : {}) }, { size: 64, values: (u, vals) => vals.map(tick) }],
			series: [{ label: opts.xLabel || "step" }].concat(
				series.map((s, i) => ({
					label: s.label,
					stroke: s.color || COLORS[i % COLORS.length],
					width: s.width === 0 ? 1 : s.width || 1.5,
					spanGaps: true,
					points: { show: !!s.points, size: s.width === 0 ? 8 : 5 },
					...(s.width === 0 ? { paths: () => null } : {}), // points only
				})),
			),
		},
		data,
		box,
	);
}

function ema(values, alpha) {
	if (!alpha) return values;
	let m = null;
	return values.map((v) => (v === null ? null : (m = m === null ? v : alpha * m + (1 - alpha) * v)));
}

// Records of one run kept by byte offset: polls fetch only what was appended.
class RunFeed {
	constructor(id) {
		this.id = id;
		this.offset = 0;
		this.records = [];
		this.detail = null;
	}
	async update() {
		const d = await api(`/api/run?id=${encodeURIComponent(this.id)}&since=${this.offset}`);
		if (d.reset) this.records = [];
		this.records.push(...d.records);
		this.offset = d.offset;
		this.detail = d;
		return this;
	}
	of(type) {
		return this.records.filter((r) => r.type === type);
	}
}

// ---- run list

async function viewRuns() {
	const main = $("#main");
	main.innerHTML = `<h1>Runs</h1>
<p class="about">Every run folder (with run.json) and matrix folder (with plan.json) under the folders the dashboard serves. Progress and ETA come from the last logged step; a running run updates here every few seconds. Tick runs and compare them on one chart.</p>
<div class="controls"><a id="cmp" href="#/">compare the ticked runs</a></div>
<table id="runs"><thead><tr><th></th><th>run</th><th>status</th><th>progress</th><th>step</th><th>ETA</th><th>best quality</th><th>metric</th><th>family</th></tr></thead><tbody></tbody></table>
<h2>Matrices</h2>
<table id="matrices"><thead><tr><th>matrix</th><th>runs</th><th>complete</th><th>failed</th></tr></thead><tbody></tbody></table>`;
	const ticked = new Set();
	$("#cmp").onclick = (e) => {
		e.preventDefault();
		if (ticked.size) location.hash = `#/compare/${[...ticked].map(encodeURIComponent).join(",")}`;
	};
	poll(async () => {
		const d = await api("/api/runs");
		$("#runs tbody").innerHTML = d.runs
			.map((r) => `<tr data-run="${esc(r.id)}"><td><input type="checkbox" ${ticked.has(r.id) ? "checked" : ""}></td>
<td><a href="#/run/${encodeURIComponent(r.id)}">${esc(r.id)}</a></td><td class="status-${esc(r.status)}">${esc(r.status)}</td>
<td><span class="bar"><span style="width:${Math.round(100 * r.progress)}%"></span></span> ${Math.round(100 * r.progress)}%</td>
<td class="num" data-value="${r.step}">${r.step} / ${r.total_steps}</td><td>${r.status === "running" ? dur(r.eta_seconds) : "-"}</td>
${cell(r.best, "best")}<td>${esc(r.quality_metric || "")}</td><td>${esc(r.family || "")}</td></tr>`)
			.join("");
		for (const tr of document.querySelectorAll("#runs tbody tr")) {
			const id = tr.dataset.run;
			$("input", tr).onchange = (e) => (e.target.checked ? ticked.add(id) : ticked.delete(id));
		}
		$("#matrices tbody").innerHTML = d.matrices
			.map((m) => `<tr data-matrix="${esc(m.id)}"><td><a href="#/matrix/${encodeURIComponent(m.id)}">${esc(m.id)}</a></td><td class="num">${m.runs}</td><td class="num">${m.complete}</td><td class="num">${m.failed}</td></tr>`)
			.join("");
	});
}

// ---- one run

function seriesOf(records, key) {
	return records.map((r) => (typeof r[key] === "number" ? r[key] : null));
}

async function viewRun(id) {
	const main = $("#main");
	main.innerHTML = `<h1 id="title">${esc(id)}</h1>
<p class="about">One run as it trains: the training loss of every logged step (raw, and smoothed by an exponential moving average you choose), the validation figure at each evaluation, the learning rate, throughput, model FLOPs utilisation, gradient norm, sparsity when pruning, and the process memory the hardware monitor recorded. Values come from metrics.jsonl and update while the run writes it.</p>
<table id="latest"><tbody></tbody></table>
<div class="controls"><label>smoothing <input id="smooth" type="range" min="0" max="0.99" step="0.01" value="0.6"> <span id="smoothv">0.6</span></label></div>
<div class="charts" id="charts"></div>
<div id="research"></div>
<h2>Samples</h2><div id="samples"></div>
<h2>Configuration</h2><p class="about" id="differs-about"></p><pre id="differs"></pre><pre id="config"></pre>`;
	const feed = new RunFeed(id);
	let alpha = 0.6;
	$("#smooth").oninput = (e) => {
		alpha = +e.target.value;
		$("#smoothv").textContent = alpha;
		draw();
	};
	const host = $("#charts");
	function draw() {
		const tr = feed.of("train"), ev = feed.of("eval");
		const d = feed.detail, m = d.metrics || {};
		const q = m.quality || {};
		const last = tr.length ? tr[tr.length - 1] : {};
		const lastEv = ev.length ? ev[ev.length - 1] : {};
		const rows = [
			["status", m.status || "starting", null],
			["step", last.step ?? 0, "step"],
			["train loss (last step)", last.loss, "loss"],
			["learning rate", last.lr, "lr"],
			[`throughput (${(m.throughput || {}).unit || "/s"})`, last.throughput, "throughput"],
			["MFU", last.mfu, "mfu"],
			["gradient norm", last.grad_norm, "grad_norm"],
			["sparsity", last.sparsity, "sparsity"],
			[`validation ${q.metric || "quality"} (last)`, lastEv.quality, "quality"],
			["best", q.best, "best"],
			["skipped steps", feed.of("skipped_step").length, "skipped_steps"],
		];
		$("#latest tbody").innerHTML = rows
			.map(([k, v, key]) => (key === null ? `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>` : `<tr data-k="${key}"><th>${esc(k)}</th>${cell(v)}</tr>`))
			.join("");
		const xs = tr.map((r) => r.step);
		const loss = seriesOf(tr, "loss");
		plot(host, "loss", "training loss", xs, [{ label: "loss", values: loss, color: "#b9cbe8", width: 1 }, { label: `EMA ${alpha}`, values: ema(loss, alpha) }]);
		if (ev.length) plot(host, "quality", `validation ${q.metric || "quality"}`, ev.map((r) => r.step), [{ label: q.metric || "quality", values: seriesOf(ev, "quality"), points: true }]);
		plot(host, "lr", "learning rate", xs, [{ label: "lr", values: seriesOf(tr, "lr") }]);
		plot(host, "throughput", "throughput", xs, [{ label: (m.throughput || {}).unit || "per s", values: seriesOf(tr, "throughput") }]);
		if (tr.some((r) => typeof r.mfu === "number")) plot(host, "mfu", "model FLOPs utilisation", xs, [{ label: "MFU", values: seriesOf(tr, "mfu") }]);
		plot(host, "grad_norm", "gradient norm (before clipping)", xs, [{ label: "norm", values: seriesOf(tr, "grad_norm") }]);
		if (tr.some((r) => r.sparsity > 0)) plot(host, "sparsity", "sparsity", xs, [{ label: "sparsity", values: seriesOf(tr, "sparsity") }]);
		const mem = d.memory || [];
		if (mem.length) {
			plot(host, "memory", "process memory (RSS, MB)", mem.map((r) => r[0]), [{ label: "RSS MB", values: mem.map((r) => r[1]) }], { xLabel: "seconds" });
			if (mem.some((r) => r[2] !== null)) plot(host, "gpu_memory", "GPU memory used (MB)", mem.map((r) => r[0]), [{ label: "MB", values: mem.map((r) => r[2]) }], { xLabel: "seconds" });
			plot(host, "cpu", "CPU utilisation (%)", mem.map((r) => r[0]), [{ label: "%", values: mem.map((r) => r[3]) }], { xLabel: "seconds" });
		}
		research(feed, $("#research"));
		const smp = feed.of("sample");
		const lastStep = smp.length ? smp[smp.length - 1].step : null;
		$("#samples").innerHTML = smp
			.filter((s) => s.step === lastStep)
			.map((s) => `<div class="sample" data-step="${s.step}">step ${s.step}: ${esc(s.text)}</div>`)
			.join("") || "<p>none logged</p>";
		$("#config").textContent = d.config || "";
		if (d.preset) {
			$("#differs-about").textContent = `What differs from ${d.preset === "defaults" ? "the defaults" : `the preset ${d.preset}`} (its value -> this run's):`;
			$("#differs").textContent = (d.differs || []).join("\n") || "nothing";
		}
		$("#title").textContent = `${id} (${m.family || "run"})`;
	}
	poll(async () => {
		await feed.update();
		draw();
	});
}

// ---- research views of one run, from what the run folder holds

function section(host, key, title, about) {
	let el = host.querySelector(`[data-section="${key}"]`);
	if (!el) {
		el = document.createElement("section");
		el.dataset.section = key;
		el.innerHTML = `<h2>${esc(title)}</h2><p class="about">${about}</p><div class="charts"></div><div class="tables"></div>`;
		host.appendChild(el);
	}
	return el;
}

function research(feed, host) {
	const ev = feed.of("eval"), r = feed.detail.research || {};
	// attention Fisher per layer over the evaluations (CONFIG_FIM_ATTENTION_AT_EVAL)
	const af = ev.filter((e) => Array.isArray(e.attention_fisher));
	if (af.length) {
		const el = section(host, "attention", "Attention Fisher per layer",
			"The attention-probability Fisher of each layer (mean over heads) at every evaluation: its trace, its largest eigenvalue, and at the last evaluation the share of the trace its top 8 and 16 eigenvalues hold. Low-trace layers are where the original's hybrid placed KVSplice, the cheap ones to compress; a spectrum concentrated in a few eigenvalues says a low-rank cache loses little there.");
		const layers = [...new Set(af.flatMap((e) => e.attention_fisher.map((l) => l.layer)))].sort((a, b) => a - b);
		const at = (e, l, k) => (e.attention_fisher.find((x) => x.layer === l) || {})[k] ?? null;
		plot($(".charts", el), "attn_trace", "attention Fisher trace by layer", af.map((e) => e.step),
			layers.map((l) => ({ label: `layer ${l}`, values: af.map((e) => at(e, l, "trace")), points: true })));
		plot($(".charts", el), "attn_eigmax", "largest eigenvalue by layer", af.map((e) => e.step),
			layers.map((l) => ({ label: `layer ${l}`, values: af.map((e) => at(e, l, "eigmax")), points: true })));
		// the spectrum's shape at the last evaluation: how much of the trace the top 8 and 16
		// eigenvalues hold (near 1: a few directions carry it, the layer compresses well)
		const last = af[af.length - 1];
		plot($(".charts", el), "attn_energy", `spectrum at step ${last.step}: energy in the top eigenvalues`, layers,
			[{ label: "top 8", values: layers.map((l) => at(last, l, "energy8")), points: true }, { label: "top 16", values: layers.map((l) => at(last, l, "energy16")), points: true }], { xLabel: "layer", integerX: true });
	}
	// sparsity per tensor over the evaluations (pruning)
	const sp = ev.filter((e) => e.sparsity_per_tensor && Object.values(e.sparsity_per_tensor).some((v) => v > 0));
	if (sp.length) {
		const el = section(host, "pruning", "Sparsity per tensor",
			"The fraction of each prunable tensor's weights that the masks hold at zero, at every evaluation. A global threshold lets tensors end at different sparsities; bitter4 sets them by layer.");
		const names = Object.keys(sp[sp.length - 1].sparsity_per_tensor);
		plot($(".charts", el), "sparsity_tensors", "sparsity by tensor", sp.map((e) => e.step),
			names.map((n) => ({ label: n, values: sp.map((e) => e.sparsity_per_tensor[n] ?? null) })), { width: 620, height: 300 });
	}
	// Fisher against Adam's v (knlp fim compare)
	if (r.fim_compare && r.fim_compare.fisher) {
		const el = section(host, "fisher", "Fisher diagonal against Adam's v",
			"Each point is one tensor: its mean Fisher diagonal against its mean exp_avg_sq (both log10). Spearman over all elements says how well v ranks weights as the Fisher does; tensor-level agreement is what a per-tensor quantization or tiering plan relies on.");
		const tables = [];
		for (const [kind, f] of Object.entries(r.fim_compare.fisher)) {
			const t = f.tensors.filter((x) => x.mean_fisher > 0 && x.mean_v > 0).sort((a, b) => a.mean_fisher - b.mean_fisher);
			plot($(".charts", el), `fisher_${kind}`, `${kind} Fisher (x) vs v (y), log10 of tensor means`, t.map((x) => Math.log10(x.mean_fisher)), [{ label: "log10 mean v", values: t.map((x) => Math.log10(x.mean_v)), points: true, width: 0 }], { xLabel: "log10 mean Fisher" });
			const g = f.global.raw;
			tables.push(`<table data-fisher="${esc(kind)}"><tr><th>${esc(kind)} Fisher</th><th>Spearman</th><th>Pearson</th></tr>
<tr><td>all elements</td>${cell(g.spearman, "spearman")}${cell(g.pearson, "pearson")}</tr>
<tr><td>tensor means</td>${cell(f.tensor_means.spearman, "tensor_spearman")}${cell(f.tensor_means.pearson)}</tr></table>`);
		}
		$(".tables", el).innerHTML = tables.join("<br>");
	}
	// knlp quantize results: perplexity against bits per weight, one point per plan
	const qz = r.quantize || [];
	if (qz.length) {
		const el = section(host, "quantize", "Quantization: perplexity against size",
			"Each point is one `knlp quantize` result kept in this run folder: the validation perplexity of the quantized model against its bits per weight. Lower and further left is better; at equal bits, a plan that spends its upgrades on the right tensors sits lower. The float model's perplexity is the reference each change is measured from.");
		const pts = [...qz].sort((a, b) => a.result.bits_per_weight - b.result.bits_per_weight);
		plot($(".charts", el), "quantize", "validation perplexity against bits per weight", pts.map((q) => q.result.bits_per_weight), [{ label: "perplexity", values: pts.map((q) => q.result.val_perplexity), points: true, width: 0 }], { xLabel: "bits per weight" });
		$(".tables", el).innerHTML = `<table><tr><th>result</th><th>plan</th><th>base / upgrade</th><th>bits per weight</th><th>perplexity</th><th>change vs float</th></tr>${pts
			.map((q) => `<tr data-quantize="${esc(q.file)}"><td>${esc(q.file)}</td><td>${esc(q.result.plan)}</td><td>${esc(q.result.base)} / ${esc(q.result.upgrade)}</td>${cell(q.result.bits_per_weight, "bpw", 3)}${cell(q.result.val_perplexity, "ppl")}${cell(q.result.perplexity_change_pct, "change", 2)}</tr>`)
			.join("")}<tr><td>float</td><td></td><td>f32</td><td class="num">32</td>${cell(pts[0].result.float_val_perplexity, "float_ppl")}<td></td></tr></table>`;
	}
	// quantization plans (*.plan.json next to GGUF exports)
	for (const [i, q] of (r.quant_plans || []).entries()) {
		const el = section(host, `quant${i}`, `Quantization plan ${q.file}`,
			"The type each tensor gets, its bytes and its plan score; the upgraded tensors are those the plan lifted from the base type. Bits per weight sets the file size; compare plans of one model at equal bits.");
		const p = q.plan;
		$(".tables", el).innerHTML = `<p>plan <b>${esc(p.plan)}</b>, base ${esc(p.base)}, upgrade ${esc(p.upgrade)}: <span data-bpw="${p.bits_per_weight}">${num(p.bits_per_weight, 3)}</span> bits per weight, ${p.upgraded.length} upgraded, ${p.fallbacks.length} fallbacks</p>
<table><tr><th>tensor</th><th>role</th><th>type</th><th>bytes</th><th>score</th></tr>${p.tensors
			.map((t) => `<tr data-tensor="${esc(t.name)}"><td>${esc(t.name)}</td><td>${esc(t.role)}</td><td>${esc(t.type)}${t.upgraded ? " (upgraded)" : ""}${t.fallback ? " (fallback)" : ""}</td><td class="num">${t.bytes}</td>${cell(t.score)}</tr>`)
			.join("")}</table>`;
		const types = [...new Set(p.tensors.map((t) => t.type))];
		plot($(".charts", el), `quant_bytes${i}`, "bytes by tensor (plan order)", p.tensors.map((_, k) => k), [{ label: "bytes", values: p.tensors.map((t) => t.bytes), points: true, width: 0 }], { xLabel: `tensor (${types.join(", ")})`, integerX: true });
	}
}

// ---- several runs overlaid

async function viewCompare(ids) {
	const main = $("#main");
	main.innerHTML = `<h1>Compare ${ids.length} runs</h1>
<p class="about">The training loss (smoothed) and the validation figure of each run on shared axes, aligned by optimizer step or by wall-clock time since the run started. A log scale separates curves that end close together.</p>
<div class="controls"><label><input type="radio" name="x" value="step" checked> by step</label><label><input type="radio" name="x" value="elapsed"> by time</label>
<label><input id="logy" type="checkbox"> log y</label><label>smoothing <input id="smooth" type="range" min="0" max="0.99" step="0.01" value="0.6"></label></div>
<div class="charts" id="charts"></div><table id="legend"><thead><tr><th>run</th><th>steps</th><th>last loss</th><th>best</th></tr></thead><tbody></tbody></table>`;
	const feeds = ids.map((id) => new RunFeed(id));
	let x = "step", alpha = 0.6;
	const redraw = () => {
		stopCharts();
		draw();
	};
	for (const r of document.querySelectorAll('input[name="x"]')) r.onchange = (e) => ((x = e.target.value), redraw());
	$("#logy").onchange = redraw;
	$("#smooth").oninput = (e) => ((alpha = +e.target.value), draw());
	function stopCharts() {
		for (const c of Object.values(charts)) c.destroy();
		charts = {};
		$("#charts").innerHTML = "";
	}
	function overlay(key, title, type, field, smooth) {
		const xsAll = [...new Set(feeds.flatMap((f) => f.of(type).map((r) => r[x])))].sort((a, b) => a - b);
		const series = feeds.map((f) => {
			const at = new Map(f.of(type).map((r) => [r[x], r[field]]));
			const v = xsAll.map((t) => (at.has(t) ? at.get(t) : null));
			return { label: f.id, values: smooth ? ema(v, alpha) : v, points: type === "eval" };
		});
		plot($("#charts"), key, title, xsAll, series, { logY: $("#logy").checked, width: 620, height: 300, xLabel: x === "step" ? "step" : "seconds" });
	}
	function draw() {
		overlay("loss", "training loss (smoothed)", "train", "loss", true);
		overlay("quality", "validation figure", "eval", "quality", false);
		$("#legend tbody").innerHTML = feeds
			.map((f) => {
				const tr = f.of("train"), q = ((f.detail || {}).metrics || {}).quality || {};
				return `<tr data-run="${esc(f.id)}"><td>${esc(f.id)}</td><td class="num">${tr.length ? tr[tr.length - 1].step : 0}</td>${cell(tr.length ? tr[tr.length - 1].loss : null, "loss")}${cell(q.best, "best")}</tr>`;
			})
			.join("");
	}
	poll(async () => {
		await Promise.all(feeds.map((f) => f.update()));
		draw();
	});
}

// ---- a matrix

async function viewMatrix(id) {
	const main = $("#main");
	main.innerHTML = `<h1>Matrix ${esc(id)}</h1>
<p class="about">Each configuration of the matrix with the mean and standard deviation of its quality over seeds, and Welch's interval for the difference from the baseline at the matrix's confidence: "better" or "worse" only when the interval excludes zero. Click a column to sort. A sparsity plot appears only when something was pruned.</p>
<table id="rows"><thead><tr><th data-s="config_id">configuration</th><th data-s="n">seeds</th><th data-s="mean">mean</th><th data-s="sd">sd</th><th data-s="diff">diff vs baseline</th><th>interval</th><th data-s="verdict">verdict</th></tr></thead><tbody></tbody></table>
<div class="charts" id="charts"></div>
<h2>Family figures</h2><p class="about">What each model family reports besides its quality, averaged over seeds: for GPT-2 the KV-cache values per token (the memory an attention variant saves at inference) and perplexity; for GraphSAGE the layout, sampler and read amplification; for images the best accuracy and throughput.</p>
<table id="figures"><thead></thead><tbody></tbody></table>
<h2>Runs</h2><table id="mruns"><thead><tr><th>run</th><th>configuration</th><th>status</th><th>quality</th></tr></thead><tbody></tbody></table>`;
	let sortKey = "mean", dir = 1;
	let d = null;
	for (const th of document.querySelectorAll("#rows th[data-s]"))
		th.onclick = () => {
			dir = sortKey === th.dataset.s ? -dir : 1;
			sortKey = th.dataset.s;
			draw();
		};
	function draw() {
		const rows = [...d.rows].sort((a, b) => {
			const x = a[sortKey], y = b[sortKey];
			if (x === y) return 0;
			if (x === null || x === undefined) return 1;
			if (y === null || y === undefined) return -1;
			return (x < y ? -1 : 1) * dir;
		});
		$("#rows tbody").innerHTML = rows
			.map((r) => `<tr data-config="${esc(r.config_id)}"><td>${esc(r.config_id)}${r.baseline ? " (baseline)" : ""}</td><td class="num">${r.n}</td>${cell(r.mean, "mean")}${cell(r.sd, "sd")}${cell(r.diff, "diff")}
<td>${r.lo === undefined ? "-" : `[${num(r.lo)}, ${num(r.hi)}]`}</td><td class="${r.verdict || ""}">${esc(r.verdict || "")}</td></tr>`)
			.join("");
		$("#mruns tbody").innerHTML = d.runs
			.map((r) => `<tr><td><a href="#/run/${encodeURIComponent(r.run)}">${esc(r.test_id)}</a></td><td>${esc(r.config_id)}</td><td>${esc(r.status)}</td>${cell(r.quality, "quality")}</tr>`)
			.join("");
		const fnames = [...new Set(d.rows.flatMap((r) => Object.keys(r.figures || {})))];
		$("#figures thead").innerHTML = `<tr><th>configuration</th>${fnames.map((f) => `<th>${esc(f)}</th>`).join("")}</tr>`;
		$("#figures tbody").innerHTML = d.rows
			.map((r) => `<tr data-config="${esc(r.config_id)}"><td>${esc(r.config_id)}</td>${fnames.map((f) => { const v = (r.figures || {})[f]; return typeof v === "number" ? cell(v, f) : `<td data-col="${esc(f)}">${esc(v ?? "-")}</td>`; }).join("")}</tr>`)
			.join("");
		// curves by configuration, mean over seeds (the page's own smoothing of the training loss)
		for (const [key, title, src, smooth] of [["train_curves", "training loss by configuration (mean over seeds, smoothed)", d.train_curves, true], ["eval_curves", `validation ${d.metric || "quality"} by configuration (mean over seeds)`, d.eval_curves, false]]) {
			const ids = Object.keys(src || {});
			if (!ids.length) continue;
			const xs = [...new Set(ids.flatMap((c) => src[c].steps))].sort((a, b) => a - b);
			plot($("#charts"), key, title, xs, ids.map((c) => {
				const at = new Map(src[c].steps.map((s, i) => [s, src[c].mean[i]]));
				const v = xs.map((x) => (at.has(x) ? at.get(x) : null));
				return { label: c, values: smooth ? ema(v, 0.6) : v, points: !smooth };
			}), { width: 620, height: 300 });
		}
		const idx = d.rows.map((_, i) => i);
		plot($("#charts"), "means", `${d.metric || "quality"} by configuration (index in the table of the plan)`, idx, [{ label: "mean", values: d.rows.map((r) => r.mean), points: true, width: 0 }], { xLabel: "configuration", integerX: true });
		if (d.pruned) {
			const pr = d.rows.filter((r) => r.pruning !== "none");
			plot($("#charts"), "sparsity", `${d.metric || "quality"} against target sparsity`, pr.map((r) => r.sparsity), [{ label: "mean", values: pr.map((r) => r.mean), points: true, width: 0 }], { xLabel: "sparsity" });
		}
	}
	let masksAsked = false;
	poll(async () => {
		d = await api(`/api/matrix?id=${encodeURIComponent(id)}`);
		draw();
		if (d.pruned && !masksAsked) {
			masksAsked = true; // reads every pruned run's final masks: once per page
			const mo = await api(`/api/masks?id=${encodeURIComponent(id)}`);
			const el = section($("#main"), "masks", "Mask overlap between pruning methods",
				"For each pair of pruned configurations at the same target sparsity, the Jaccard index of the weights their final masks keep (|A and B| / |A or B|), averaged over seeds, next to what two independent masks of the same densities would give. Far above that, the methods keep largely the same weights; near it, they choose differently.");
			$(".tables", el).innerHTML = mo.pairs.length
				? `<table><tr><th>configuration A</th><th>configuration B</th><th>sparsity</th><th>seeds</th><th>Jaccard</th><th>independent masks</th></tr>${mo.pairs
						.map((p) => `<tr data-pair="${esc(p.a)}|${esc(p.b)}"><td>${esc(p.a)}</td><td>${esc(p.b)}</td>${cell(p.sparsity, "sparsity", 2)}<td class="num">${p.seeds}</td>${cell(p.jaccard, "jaccard")}${cell(p.independent, "independent")}</tr>`)
						.join("")}</table>`
				: "<p>no two pruned configurations at one sparsity</p>";
		}
	});
}

function route() {
	stopPolling();
	const h = location.hash.replace(/^#\/?/, "");
	const [page, ...rest] = h.split("/");
	const arg = rest.join("/");
	if (page === "run") return viewRun(decodeURIComponent(arg));
	if (page === "compare") return viewCompare(arg.split(",").map(decodeURIComponent));
	if (page === "matrix") return viewMatrix(decodeURIComponent(arg));
	return viewRuns();
}

window.addEventListener("hashchange", route);
route();
