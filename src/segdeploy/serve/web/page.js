// The page of `segdeploy serve`: everything goes through the JSON and image endpoints of this
// server (GET /v1/models, POST /v1/models/{model}/predict); nothing is loaded from elsewhere.
"use strict";

const state = { models: [], key: "" };

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function describe(model) {
  const f = model.fidelity || {};
  const judged = (f.judged || []).length || f.images || 0;
  const photos = (f.judged || []).filter((j) => String(j.name || "").startsWith("photo:")).length;
  const verdict = model.verified
    ? `<span class="verified">VERIFIED</span> against PyTorch fp32 on ${judged} images` +
      (photos ? ` (${photos} of them real photos)` : "")
    : `<span class="unverified">UNVERIFIED</span>: ${(f.not_verified_because || []).join("; ") || f.status}`;
  const artifact = model.artifact ? ` · ${model.artifact.name} (sha256 ${model.artifact.sha256.slice(0, 12)}…)` : "";
  return `${model.name}: ${model.backend} ${model.precision}${artifact} — ${verdict}`;
}

function showVerdict() {
  const model = state.models.find((m) => m.name === document.getElementById("model").value);
  document.getElementById("verdict").innerHTML = model ? describe(model) : "no model served";
}

async function loadModels() {
  const answer = await fetch("/v1/models", { headers: headers() });
  if (answer.status === 401) {
    document.getElementById("key-label").hidden = false;
    document.getElementById("verdict").textContent = "this server needs an API key";
    return;
  }
  const body = await answer.json();
  state.models = body.models;
  const select = document.getElementById("model");
  select.innerHTML = "";
  for (const model of state.models) {
    const option = document.createElement("option");
    option.value = option.textContent = model.name;
    select.appendChild(option);
  }
  showVerdict();
}

async function predict(file, model, output) {
  const form = new FormData();
  form.append("file", file, file.name);
  const started = performance.now();
  const answer = await fetch(`/v1/models/${encodeURIComponent(model)}/predict?output=${output}`,
                             { method: "POST", body: form, headers: headers() });
  const ms = performance.now() - started;
  if (!answer.ok) {
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${answer.status}: ${detail}`);
  }
  return { blob: await answer.blob(), ms, answer };
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "");
}

async function handle(file) {
  const model = document.getElementById("model").value;
  const node = document.getElementById("result-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".name").textContent = file.name;
  node.querySelector(".original").src = URL.createObjectURL(file);
  const status = node.querySelector(".status");
  status.textContent = "segmenting…";
  document.getElementById("results").prepend(node);
  try {
    const mask = await predict(file, model, "mask");
    const cutout = await predict(file, model, "cutout");
    for (const [kind, result] of [["mask", mask], ["cutout", cutout]]) {
      const url = URL.createObjectURL(result.blob);
      node.querySelector(`.${kind}`).src = url;
      const link = node.querySelector(`.download-${kind}`);
      link.href = url;
      link.download = `${stem(file.name)}.${kind}.png`;
    }
    const server = mask.answer.headers.get("x-segdeploy-inference-ms");
    const unverified = mask.answer.headers.get("x-segdeploy-unverified") === "true";
    status.textContent = `${model}: mask in ${mask.ms.toFixed(0)} ms round trip` +
      (server ? ` (forward pass ${server} ms, batch of ${mask.answer.headers.get("x-segdeploy-batch-size")})` : "") +
      (unverified ? " — UNVERIFIED model" : "");
    node.dataset.done = "true";
  } catch (error) {
    status.textContent = `failed: ${error.message}`;
    node.dataset.done = "error";
  }
}

function handleFiles(files) {
  for (const file of files) {
    if (file.type.startsWith("image/") || /\.(jpe?g|png|webp|bmp|tiff?)$/i.test(file.name)) handle(file);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    handleFiles(event.dataTransfer.files);
  });
  document.getElementById("files").addEventListener("change", (event) => handleFiles(event.target.files));
  document.getElementById("model").addEventListener("change", showVerdict);
  document.getElementById("api-key").addEventListener("change", (event) => {
    state.key = event.target.value;
    loadModels();
  });
  loadModels();
});
