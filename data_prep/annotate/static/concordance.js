// The concordance page: counts per annotator, disagreement on overlaps, votes by dose.
"use strict";

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

async function show() {
  try {
    const c = await api("GET", "/api/concordance");
    document.getElementById("summary").textContent = `${c.votes} votes on ${c.items} items.`;
    fillTable("annotators", c.annotators.map((a) => [a.name, a.healthy, a.sick, a.unsure, a.total]));
    const o = c.overlap;
    document.getElementById("overlap").textContent = o.items
      ? `${o.items} items without an "unsure" vote, ${o.disagree} with disagreement ` +
        `(${(100 * o.disagree_fraction).toFixed(1)}%); ${o.items_with_unsure} more with an "unsure" vote.`
      : `No item has two votes without an "unsure" (${o.items_with_unsure} with one).`;
    fillTable("by-dose", c.by_dose.map((d) => {
      const n = d.healthy + d.sick + d.unsure;
      return [d.dose_s, d.healthy, d.sick, d.unsure, n ? (d.sick / n).toFixed(2) : "-"];
    }));
    document.body.dataset.state = "ready";
  } catch (err) {
    document.getElementById("status").textContent =
      err.status === 401 ? "Log in on the annotation page first." : "Error: " + err.message;
    document.body.dataset.state = "error";
  }
}

show();
