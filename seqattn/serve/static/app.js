// The attention page: POST /translate with attention, then draw the words and the weight grid.
"use strict";
const $ = (id) => document.getElementById(id);
const show = (piece) => piece.replace(/▁/g, " ").trim() || piece;

function shade(w) {
  return `rgba(68, 1, 84, ${Math.min(1, w).toFixed(3)})`;
}

function highlight(row, item) {
  document.querySelectorAll(".active").forEach((el) => el.classList.remove("active"));
  const weights = item.attention[row];
  document.querySelectorAll("#source .tok").forEach((el, j) => {
    el.style.background = `rgba(228, 87, 46, ${weights[j].toFixed(3)})`;
    el.querySelector(".w").textContent = weights[j].toFixed(2);
    el.dataset.weight = weights[j].toFixed(4);
  });
  document.querySelector(`#translation .tok[data-row="${row}"]`)?.classList.add("active");
  document.querySelector(`#grid tbody tr[data-row="${row}"]`)?.classList.add("active");
}

function render(item) {
  const translation = $("translation"), source = $("source"), grid = $("grid");
  translation.replaceChildren();
  source.replaceChildren();
  grid.replaceChildren();
  if (!item.attention) {
    translation.textContent = item.translation;
    return;
  }
  item.target_tokens.forEach((piece, i) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.row = i;
    span.textContent = show(piece);
    span.addEventListener("mouseenter", () => highlight(i, item));
    translation.append(span);
  });
  item.source_tokens.forEach((piece) => {
    const span = document.createElement("span");
    span.className = "tok";
    span.append(show(piece));
    const w = document.createElement("span");
    w.className = "w";
    span.append(w);
    source.append(span);
  });
  const head = grid.createTHead().insertRow();
  head.append(document.createElement("th"));
  item.source_tokens.forEach((piece) => {
    const th = document.createElement("th");
    th.textContent = show(piece);
    head.append(th);
  });
  const body = grid.createTBody();
  item.attention.forEach((weights, i) => {
    const tr = body.insertRow();
    tr.dataset.row = i;
    const th = document.createElement("th");
    th.textContent = show(item.target_tokens[i]);
    tr.append(th);
    weights.forEach((w) => {
      const td = tr.insertCell();
      td.className = w > 0.5 ? "cell dark" : "cell";
      td.style.background = shade(w);
      td.title = w.toFixed(3);
      td.textContent = w.toFixed(2);
    });
    tr.addEventListener("mouseenter", () => highlight(i, item));
  });
}

async function translate(event) {
  event.preventDefault();
  const error = $("error");
  error.hidden = true;
  const beam = Number($("beam").value), nbest = Math.min(Number($("nbest").value), beam);
  $("translate").disabled = true;
  try {
    const resp = await fetch("/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: $("text").value, beam, nbest, attention: true }),
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    const item = data.translations[0];
    render(item);
    const list = $("nbest-list");
    list.replaceChildren();
    (item.nbest || []).forEach((h) => {
      const li = document.createElement("li");
      li.textContent = `${h.translation}  (${h.score.toFixed(3)})`;
      list.append(li);
    });
    list.hidden = !item.nbest;
    $("result").hidden = false;
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  } finally {
    $("translate").disabled = false;
  }
}

$("form").addEventListener("submit", translate);
fetch("/info").then((r) => r.json()).then((info) => {
  $("model-info").textContent = `${info.src_lang} → ${info.tgt_lang} · ${info.model.rnn.toUpperCase()} with ` +
    `${info.model.attention} attention. Hover an output word to see which source words it attended to.`;
});
