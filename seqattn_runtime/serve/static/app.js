// The attention page: POST /translate with attention, then draw the words and the weight grid. Clicking an
// output word offers the model's alternatives there (or a word of one's own); the pick becomes the end of a
// target prefix, and the model translates the rest again from it.
"use strict";
const $ = (id) => document.getElementById(id);
const show = (piece) => piece.replace(/▁/g, " ").trim() || piece;
const ALTERNATIVES = 5;
let last = null;   // the request and answer on screen: {text, beam, nbest, item}

// The text of output pieces (SentencePiece: ▁ marks a space), <eos> left out.
const textOf = (pieces) => pieces.filter((p) => p !== "<eos>").join("").replace(/▁/g, " ").trim();

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
    span.className = i < (item.fixed || 0) ? "tok fixed" : "tok";
    span.dataset.row = i;
    span.textContent = show(piece);
    span.title = "click: other words here";
    span.addEventListener("mouseenter", () => highlight(i, item));
    span.addEventListener("click", () => offer(i, item));
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

// The model's alternatives for output position i, and a box for a word of one's own.
function offer(i, item) {
  const box = $("choices");
  box.replaceChildren();
  const title = document.createElement("p");
  title.textContent = `Instead of "${show(item.target_tokens[i])}", the model's next choices here:`;
  box.append(title);
  (item.alternatives?.[i] || []).forEach(({ token, p }) => {
    if (token === item.target_tokens[i]) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "choice";
    button.textContent = `${show(token)} ${(100 * p).toFixed(1)}%`;
    button.addEventListener("click", () => correct(i, item, token));
    box.append(button);
  });
  const own = document.createElement("input");
  own.id = "own-word";
  own.placeholder = "or type a word";
  const use = document.createElement("button");
  use.type = "button";
  use.id = "use-word";
  use.textContent = "Use";
  use.addEventListener("click", () => own.value.trim() && correct(i, item, "▁" + own.value.trim()));
  box.append(own, use);
  box.hidden = false;
}

// Keep the output before position i, put `piece` there, and let the model translate the rest again.
function correct(i, item, piece) {
  const prefix = textOf([...item.target_tokens.slice(0, i), piece]);
  return run(last.text, last.beam, last.nbest, prefix);
}

async function translate(event) {
  event.preventDefault();
  const beam = Number($("beam").value), nbest = Math.min(Number($("nbest").value), beam);
  await run($("text").value, beam, nbest, null);
}

async function run(text, beam, nbest, prefix) {
  const error = $("error");
  error.hidden = true;
  $("choices").hidden = true;
  $("translate").disabled = true;
  try {
    const body = { text, beam, nbest, attention: true, alternatives: ALTERNATIVES };
    if (prefix !== null) body.prefix = prefix;
    const resp = await fetch("/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    const item = data.translations[0];
    item.fixed = prefix === null ? 0 : item.target_tokens.findIndex((_, n) =>
      textOf(item.target_tokens.slice(0, n + 1)).length >= prefix.length) + 1;
    last = { text, beam, nbest, item };
    $("fixed-note").hidden = prefix === null;
    $("fixed-note").textContent = prefix === null ? "" : `Kept: "${prefix}"; the rest is the model's again.`;
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
    `${info.model.attention} attention. Hover an output word to see which source words it attended to; ` +
    "click it to put another word there and let the model translate the rest again.";
});
