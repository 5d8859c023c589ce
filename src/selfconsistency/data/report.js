"use strict";
// Every text from the run (questions, paths, answers) goes into the page through textContent only.
const DATA = JSON.parse(document.getElementById("report-data").textContent);
const PAGE_SIZE = 100;
const state = { filter: "all", low: 0.5, vote: 0, search: "", page: 0, shown: [] };
const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
const answerText = (answer) => (answer === null ? "–" : answer);
const percent = (x) => (x === null ? "–" : (100 * x).toFixed(0) + " %");
const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");

function voteOf(q) { return q.votes[state.vote] || null; }

function matches(q) {
  const vote = voteOf(q);
  const greedy = q.greedy;
  if (state.search) {
    const needle = state.search.toLowerCase();
    if (!q.id.toLowerCase().includes(needle) && !q.question.toLowerCase().includes(needle)) return false;
  }
  switch (state.filter) {
    case "wrong": return vote !== null && vote.correct === false;  // null: unlabelled
    case "low": return vote !== null && vote.agreement !== null && vote.agreement < state.low;
    case "greedy-wrong-vote-right": return greedy !== null && greedy.correct === false && vote !== null && vote.correct;
    case "vote-wrong-greedy-right": return greedy !== null && greedy.correct && vote !== null && vote.correct === false;
    case "abstained":
      return (vote !== null && vote.abstained > 0) || (greedy !== null && greedy.answer === null);
    case "incomplete": return !q.complete;
    default: return true;
  }
}

function voteCell(vote) {
  if (vote === null) return "–";
  const parts = vote.counts.map(([answer, count]) => answer + " ×" + count);
  if (vote.abstained) parts.push("none ×" + vote.abstained);
  return (vote.answer === null ? "–" : vote.answer) + (vote.tie ? " (tie)" : "") + "  (" + parts.join(", ") + ")";
}

function row(q, position) {
  const vote = voteOf(q);
  const tr = el("tr");
  tr.dataset.position = String(position);
  tr.dataset.id = q.id;
  const question = el("td", q.question, "question");
  question.title = q.question;
  // correct is null for an unlabelled question: nothing to mark
  const correct = vote === null || vote.correct === null ? el("td", "–")
    : el("td", vote.correct ? "✓" : "✗", vote.correct ? "ok" : "bad");
  const greedy = q.greedy === null ? el("td", "–")
    : el("td", answerText(q.greedy.answer), q.greedy.correct === null ? "" : q.greedy.correct ? "ok" : "bad");
  tr.append(el("td", q.id), question, el("td", q.gold ?? "–"), greedy, el("td", voteCell(vote)),
    el("td", vote === null ? "–" : percent(vote.agreement), "num"), correct,
    el("td", vote === null ? "–" : vote.paths_used + " / " + vote.paths_stored, "num"),
    el("td", q.complete ? (vote === null ? "–" : vote.stopped) : "incomplete"));
  tr.addEventListener("click", () => showQuestion(position, tr));
  return tr;
}

function render() {
  state.shown = [];
  DATA.questions.forEach((q, position) => { if (matches(q)) state.shown.push(position); });
  const pages = Math.max(1, Math.ceil(state.shown.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const slice = state.shown.slice(start, start + PAGE_SIZE);
  document.querySelector("#questions tbody").replaceChildren(...slice.map((p) => row(DATA.questions[p], p)));
  $("summary").textContent = state.shown.length
    ? "questions " + (start + 1) + "–" + (start + slice.length) + " of " + state.shown.length
      + " shown (" + plural(DATA.questions.length, "question") + " in the run)"
    : "no question matches (" + plural(DATA.questions.length, "question") + " in the run)";
  $("page").textContent = " page " + (state.page + 1) + " of " + pages + " ";
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}

function pathBlock(path, used) {
  const [temperature, index, answer, logprob, finish, tokens, text] = path;
  const block = el("div", null, "path" + (used ? "" : " unused"));
  const where = temperature === 0 ? "greedy (T=0)" : "T=" + temperature + " path " + index;
  block.append(el("h4", where + ": answer " + answerText(answer)
    + (logprob === null ? "" : ", log-prob " + logprob.toFixed(2))
    + ", " + plural(tokens, "token") + ", " + finish + (used ? "" : " (after the stop, not voted)")),
  el("pre", text));
  return block;
}

function showQuestion(position, tr) {
  const q = DATA.questions[position];
  document.querySelectorAll("#questions tr.selected").forEach((r) => r.classList.remove("selected"));
  tr.classList.add("selected");
  $("detail-title").textContent = "Question " + q.id;
  $("detail-question").textContent = q.question;
  $("detail-gold").textContent = "gold: " + (q.gold ?? "none (unlabelled)");
  const usedAt = new Map(q.votes.map((v) => [v.temperature, v.paths_used]));
  const [first, count] = q.paths;  // the question's rows of DATA.paths
  const blocks = DATA.paths.slice(first, first + count)
    .map((p) => pathBlock(p, p[0] === 0 || p[1] < (usedAt.get(p[0]) ?? Infinity)));
  $("detail-paths").replaceChildren(...(blocks.length ? blocks : [el("p", "no stored paths")]));
  $("detail").hidden = false;
  $("detail").scrollIntoView();
}

function init() {
  const select = $("temperature");
  DATA.temperatures.forEach((t, i) => select.append(new Option("T=" + t, String(i))));
  $("temperature-label").hidden = DATA.temperatures.length < 2;
  select.addEventListener("change", () => { state.vote = Number(select.value); render(); });
  $("filter").addEventListener("change", (e) => { state.filter = e.target.value; state.page = 0; render(); });
  $("low").addEventListener("input", (e) => { state.low = Number(e.target.value); state.page = 0; render(); });
  $("search").addEventListener("input", (e) => { state.search = e.target.value; state.page = 0; render(); });
  $("prev").addEventListener("click", () => { state.page -= 1; render(); });
  $("next").addEventListener("click", () => { state.page += 1; render(); });
  render();
}

init();
