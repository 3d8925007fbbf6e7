// The search page: POST /search with include_first_stage, then the fused first stage and the reranked list
// side by side. Plain DOM, no framework, no build step. Everything that comes from the index (titles, text,
// ids, metadata) and from the API (errors, notes) is inserted with textContent, never as markup.
"use strict";

(() => {
  const API_KEY_STORAGE = "hybrid-rerank.api-key";
  // Stage timings in pipeline order; the two recall legs run inside "recall" and are shown under it.
  const STAGES = [
    { key: "embed_query", label: "embed query" },
    { key: "recall", label: "recall" },
    { key: "bm25", label: "BM25 leg", leg: true },
    { key: "vector", label: "vector leg", leg: true },
    { key: "knn", label: "vector leg", leg: true },
    { key: "fusion", label: "fusion" },
    { key: "rerank", label: "rerank" },
    { key: "total", label: "total", total: true },
  ];
  // Which form control an API error's `field` points at (by its name before any `[i]` or `.key`).
  const FIELD_CONTROLS = {
    query: "query",
    k: "k",
    rerank: "rerank",
    filters: "filters",
    filter_expressions: "filters",
    authorization: "api-key",
    api_key: "api-key",
  };

  const byId = (id) => document.getElementById(id);
  const form = byId("search-form");
  const queryInput = byId("query");
  const kSelect = byId("k");
  const rerankToggle = byId("rerank");
  const filtersInput = byId("filters");
  const apiKeyInput = byId("api-key");
  const results = byId("results");

  let page = 1;
  let inFlight = null; // AbortController of the running request, if any

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function filterLines() {
    return filtersInput.value
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line.length > 0);
  }

  function formatScore(value) {
    if (value === null || value === undefined) return "—";
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 0.001 || magnitude >= 10000)) return value.toExponential(2);
    return value.toFixed(3);
  }

  function formatMs(ms) {
    if (ms >= 100) return `${Math.round(ms)} ms`;
    if (ms >= 10) return `${ms.toFixed(1)} ms`;
    return `${ms.toFixed(2)} ms`;
  }

  // --- errors and the banner -------------------------------------------------------------------------

  function clearError() {
    const box = byId("error");
    box.hidden = true;
    box.replaceChildren();
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  }

  function showError(message, field, status) {
    const box = byId("error");
    box.replaceChildren();
    box.appendChild(element("strong", null, status ? `Error ${status}` : "Error"));
    box.appendChild(element("span", "error-message", message));
    box.dataset.field = field || "";
    if (field) box.appendChild(element("span", "error-field", `field: ${field}`));
    if (status === 401 || status === 403) {
      box.appendChild(element("span", "error-hint", "Enter the service's API key above."));
    }
    box.hidden = false;
    // A result left under the error would read as the answer to the request that failed.
    for (const id of ["rerank-banner", "summary", "columns", "pager"]) byId(id).hidden = true;
    const base = field ? field.split(/[.[]/)[0] : "";
    const control = Object.hasOwn(FIELD_CONTROLS, base) ? byId(FIELD_CONTROLS[base]) : null;
    if (control) control.setAttribute("aria-invalid", "true");
  }

  function showBanner(result) {
    const banner = byId("rerank-banner");
    banner.hidden = result.reranked !== false;
    byId("rerank-note").textContent = result.reranked === false ? result.rerank_note || "no reason given" : "";
  }

  // --- timings ---------------------------------------------------------------------------------------

  function renderTimings(timings) {
    const box = byId("timings");
    box.replaceChildren();
    const total = timings.total || Math.max(0, ...Object.values(timings));
    const known = new Set(STAGES.map((stage) => stage.key));
    const extra = Object.keys(timings)
      .filter((key) => !known.has(key))
      .map((key) => ({ key, label: key }));
    for (const stage of [...STAGES, ...extra]) {
      const ms = timings[stage.key];
      if (typeof ms !== "number") continue;
      const row = element("div", "timing");
      if (stage.leg) row.classList.add("leg");
      if (stage.total) row.classList.add("total");
      row.dataset.testid = "timing";
      row.dataset.stage = stage.key;
      row.dataset.ms = String(ms);
      row.appendChild(element("span", "timing-label", stage.label));
      const track = element("span", "timing-track");
      const bar = element("span", "timing-bar");
      bar.style.width = `${total > 0 ? Math.max(0.5, Math.min(100, (ms / total) * 100)) : 0}%`;
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(element("span", "timing-value", formatMs(ms)));
      box.appendChild(row);
    }
  }

  // --- hits ------------------------------------------------------------------------------------------

  function scoreCell(list, name, score, rank, missing) {
    const cell = element("div", "score");
    cell.dataset.stage = name;
    cell.dataset.score = score === null || score === undefined ? "" : String(score);
    cell.appendChild(element("dt", null, name));
    const value = element("dd", null, formatScore(score));
    if (score === null || score === undefined) {
      value.classList.add("missing");
      value.title = missing;
    }
    if (rank !== null && rank !== undefined) value.appendChild(element("span", "score-rank", `#${rank}`));
    cell.appendChild(value);
    list.appendChild(cell);
  }

  function movement(hit) {
    const from = hit.ranks && hit.ranks.fused;
    if (!from) return null;
    const delta = from - hit.rank;
    if (delta > 0) return { text: `▲${delta}`, kind: "up", title: `up ${delta} from first-stage #${from}` };
    if (delta < 0) return { text: `▼${-delta}`, kind: "down", title: `down ${-delta} from first-stage #${from}` };
    return { text: "=", kind: "same", title: `same place as in the first stage (#${from})` };
  }

  function renderHit(hit, side, result, finalRanks) {
    const template = byId("hit-template");
    const item = template.content.firstElementChild.cloneNode(true);
    const field = (name) => item.querySelector(`[data-field="${name}"]`);
    item.dataset.id = hit.id;
    item.dataset.rank = String(hit.rank);
    item.dataset.fusedRank = String(hit.ranks ? hit.ranks.fused : "");
    field("rank").textContent = String(hit.rank);
    field("title").textContent = hit.title || hit.id;
    field("id").textContent = hit.id;
    field("text").textContent = hit.text || "";
    field("text").title = hit.text || "";

    const move = field("move");
    if (side === "reranked" && result.reranked) {
      const moved = movement(hit);
      if (moved) {
        move.textContent = moved.text;
        move.title = moved.title;
        move.classList.add(moved.kind);
        item.dataset.move = moved.text;
      }
    } else if (side === "first-stage" && result.reranked) {
      const now = finalRanks.get(hit.id);
      move.textContent = now ? `→ #${now}` : "→ off page";
      move.title = now ? `reranked to #${now}` : "reranked off this page";
      move.classList.add("to");
    } else {
      move.remove();
    }

    const metadata = field("metadata");
    for (const [key, value] of Object.entries(hit.metadata || {})) {
      const shown = Array.isArray(value) ? value.join(", ") : String(value);
      metadata.appendChild(element("li", null, `${key}: ${shown}`));
    }
    if (!metadata.childElementCount) metadata.remove();

    const scores = field("scores");
    const s = hit.scores || {};
    const r = hit.ranks || {};
    scoreCell(scores, "bm25", s.bm25, r.bm25, "not in the BM25 leg's top N");
    scoreCell(scores, "vector", s.vector, r.vector, "not in the vector leg's top N");
    scoreCell(scores, "fused", s.fused, r.fused, "");
    // The cross-encoder's own rank is not in the reply (the final order may mix in the fused score).
    scoreCell(scores, "rerank", s.rerank, null, "not reranked");
    if (side === "reranked" && result.reranked) scoreCell(scores, "final", hit.score, null, "");
    return item;
  }

  function renderList(listId, hits, side, result, finalRanks) {
    const list = byId(listId);
    list.replaceChildren();
    if (!hits.length) {
      list.appendChild(element("li", "empty", "No hits."));
      return;
    }
    for (const hit of hits) list.appendChild(renderHit(hit, side, result, finalRanks));
  }

  // Hovering a hit highlights the same document in the other column.
  function linkHover(event) {
    const hit = event.target.closest ? event.target.closest("li.hit") : null;
    for (const node of results.querySelectorAll("li.hit.linked")) node.classList.remove("linked");
    if (!hit || event.type === "mouseout") return;
    for (const node of results.querySelectorAll("li.hit")) {
      if (node.dataset.id === hit.dataset.id) node.classList.add("linked");
    }
  }

  function renderResult(result, k) {
    showBanner(result);
    const hits = result.hits || [];
    const firstStage = Array.isArray(result.first_stage) ? result.first_stage : null;
    const finalRanks = new Map(hits.map((hit) => [hit.id, hit.rank]));
    renderList("reranked-list", hits, "reranked", result, finalRanks);
    renderList("first-stage-list", firstStage || [], "first-stage", result, finalRanks);
    byId("reranked-heading").textContent = result.reranked ? "Reranked" : "Final order";
    byId("reranked-subtitle").textContent = result.reranked ? "cross-encoder order, ▲▼ places moved" : "not reranked: first-stage order";

    const parts = [`${result.candidates} candidates`, `page ${page}`];
    parts.push(result.reranked ? "reranked by the cross-encoder" : "first-stage order");
    byId("summary-line").textContent = parts.join(" · ");
    renderTimings(result.timings_ms || {});
    byId("summary").hidden = false;
    byId("columns").hidden = false;

    const last = page * k >= result.candidates || hits.length < k;
    byId("previous-page").disabled = page <= 1;
    byId("next-page").disabled = last;
    byId("page-label").textContent = `Page ${page}`;
    byId("pager").hidden = page <= 1 && last;
  }

  // --- the request -----------------------------------------------------------------------------------

  function requestBody(k) {
    return {
      query: queryInput.value,
      k,
      page,
      rerank: rerankToggle.checked,
      filter_expressions: filterLines(),
      include_first_stage: true,
    };
  }

  function errorFrom(status, body, text) {
    if (body && typeof body.error === "string") return { message: body.error, field: body.field || null };
    if (body && body.detail !== undefined) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      return { message: detail, field: null };
    }
    return { message: `HTTP ${status}: ${(text || "").slice(0, 300) || "no message"}`, field: null };
  }

  function remember(k) {
    const params = new URLSearchParams();
    params.set("q", queryInput.value);
    params.set("k", String(k));
    if (page > 1) params.set("page", String(page));
    if (!rerankToggle.checked) params.set("rerank", "0");
    for (const line of filterLines()) params.append("filter", line);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }

  function finish(state) {
    results.dataset.state = state;
    results.dataset.searches = String(Number(results.dataset.searches || "0") + 1);
    byId("submit").disabled = false;
    byId("submit").textContent = "Search";
  }

  async function search() {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const k = Number(kSelect.value);
    clearError();
    results.dataset.state = "loading";
    byId("submit").disabled = true;
    byId("submit").textContent = "Searching…";

    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const key = apiKeyInput.value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    let text;
    try {
      response = await fetch("/search", {
        method: "POST",
        headers,
        body: JSON.stringify(requestBody(k)),
        signal: controller.signal,
      });
      text = await response.text();
    } catch (error) {
      if (error.name === "AbortError") return; // a newer search replaced this one
      inFlight = null;
      showError(`could not reach the service: ${error.message}`, null, null);
      finish("error");
      return;
    }
    if (inFlight !== controller) return;
    inFlight = null;
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (!response.ok || body === null) {
      const { message, field } = errorFrom(response.status, body, text);
      showError(message, field, response.status);
      finish("error");
      return;
    }
    renderResult(body, k);
    remember(k);
    finish("done");
  }

  // --- wiring ----------------------------------------------------------------------------------------

  function restore() {
    apiKeyInput.value = sessionStorage.getItem(API_KEY_STORAGE) || "";
    const params = new URLSearchParams(location.search);
    if (params.has("k") && [...kSelect.options].some((o) => o.value === params.get("k"))) {
      kSelect.value = params.get("k");
    }
    rerankToggle.checked = params.get("rerank") !== "0";
    filtersInput.value = params.getAll("filter").join("\n");
    page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
    if (params.get("q")) {
      queryInput.value = params.get("q");
      search();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    page = 1;
    search();
  });
  // Ctrl/Cmd+Enter in the filter box searches too (plain Enter starts a new filter line).
  filtersInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  for (const control of [kSelect, rerankToggle]) {
    control.addEventListener("change", () => {
      if (queryInput.value.trim()) form.requestSubmit();
    });
  }
  apiKeyInput.addEventListener("input", () => {
    const key = apiKeyInput.value.trim();
    if (key) sessionStorage.setItem(API_KEY_STORAGE, key);
    else sessionStorage.removeItem(API_KEY_STORAGE);
  });
  byId("previous-page").addEventListener("click", () => {
    page = Math.max(1, page - 1);
    search();
  });
  byId("next-page").addEventListener("click", () => {
    page += 1;
    search();
  });
  results.addEventListener("mouseover", linkHover);
  results.addEventListener("mouseout", linkHover);
  restore();
})();
