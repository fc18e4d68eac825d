// The private-match demo: one crdtdb database per match, kept in this
// browser's IndexedDB and synced live with `crdtdb serve`.  Who may do what
// is the server's _members policy (docs/auth.md): the creator is the owner,
// the owner invites, an invited player accepts and then plays.  The page
// only writes records; everything it shows comes from the local copy and
// its change events, so a remote move and a local one draw the same way.
import { CrdtdbDataStore, IndexedDBBackend } from "../../js/dist/crdtdb.browser.js";
import config from "./config.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const user = params.get("user");
const match = params.get("match");
const users = Object.keys(config.users);
const SIZE = 36; // a 6 x 6 board

const show = (id, on = true) => { $(id).hidden = !on; };
const say = (text) => { $("message").textContent = text; };
const link = (u, m) => `?user=${encodeURIComponent(u)}${m ? `&match=${encodeURIComponent(m)}` : ""}`;
const mark = (u) => `u${Math.max(0, users.indexOf(u)) % 4}`;

function pickScreen() {
  show("pick");
  for (const u of users) {
    const li = document.createElement("li");
    li.innerHTML = `<a href="${link(u)}" target="_blank"></a>`;
    li.firstChild.textContent = `Play as ${u}`;
    $("users").append(li);
  }
  $("status").textContent = "not connected";
}

function lobbyScreen() {
  show("lobby");
  $("status").textContent = "not connected";
  // an unguessable id: anyone with a valid token may create a database
  $("create").onclick = () => {
    const id = `match-${crypto.getRandomValues(new Uint32Array(2)).join("").slice(0, 12)}`;
    location.search = link(user, id);
  };
  $("join").onsubmit = (e) => {
    e.preventDefault();
    location.search = link(user, $("match-id").value.trim());
  };
}

/** Opens this user's copy of the match; a second tab of the same user and
 *  match gets EBUSY (one writer per copy) and may wait for the first. */
async function openStore(lock) {
  return CrdtdbDataStore.open({
    dbId: match,
    collections: ["_members", "Moves"],
    backend: new IndexedDBBackend({ name: `${user}@${match}`, lock }),
    sync: { url: config.server, token: config.users[user], onStatus: showStatus },
  });
}

let store = null;
let offlineByHand = false;

function showStatus(s) {
  const el = $("status");
  el.className = `status ${s.state}`;
  el.dataset.state = s.state;
  let text = offlineByHand && s.state === "stopped" ? "offline (by you)" : s.state;
  if (s.error && s.state !== "synced" && s.state !== "open") {
    if (s.error.code === "EDENIED") text += ": not a member of this match (yet): ask its owner to invite you, then try again";
    else if (s.error.code === "EAUTH") text += ": your token was refused (expired? run run.sh again)";
    else text += `: ${s.error.message}`;
  }
  el.textContent = text;
  // refused for good (not a member yet, a bad token): offer another try
  const refused = s.state === "stopped" && !!s.error && !offlineByHand;
  $("offline").textContent = refused ? "Try again" : offlineByHand ? "Come back online" : "Go offline";
}

async function gameScreen() {
  show("game");
  $("match-name").textContent = match;
  try {
    store = await openStore("fail");
  } catch (e) {
    if (e.code !== "EBUSY") throw e;
    say(`${user}'s copy of this match is open in another tab. Waiting for that tab to close…`);
    store = await openStore("wait");
    say("");
  }
  const btn = $("offline");
  show("offline");
  btn.onclick = () => {
    const s = store.syncStatus;
    if (s.state === "stopped" && s.error && !offlineByHand) return store.sync.start();
    offlineByHand = !offlineByHand;
    if (offlineByHand) store.sync.stop(); else store.sync.start();
    showStatus(store.syncStatus);
  };
  $("accept").onclick = () => store.update("_members", user, { status: "accepted" }).catch((e) => say(e.message));
  // redraw from the copy on any change, once per frame
  let queued = false;
  const redraw = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; render().catch((e) => say(e.message)); });
  };
  store.observable("_members").subscribe(redraw);
  store.observable("Moves").subscribe(redraw);
  buildBoard();
  await render();
}

function buildBoard() {
  for (let i = 0; i < SIZE; i++) {
    const b = document.createElement("button");
    b.className = "cell";
    b.dataset.cell = String(i);
    b.onclick = () => play(i);
    $("board").append(b);
  }
}

async function play(cell) {
  // ids sort by time, then by player: two players' moves never collide
  const id = `${Date.now().toString(36).padStart(9, "0")}-${user}`;
  await store.add("Moves", id, { by: user, cell, at: new Date() }).catch((e) => say(e.message));
}

async function render() {
  const members = await store.query("_members", {});
  const me = members.find((m) => m.id === user);
  const owner = me?.role === "owner" && me.status === "accepted";
  const canPlay = me?.status === "accepted" && (me.role === "owner" || me.role === "writer");

  $("members").replaceChildren(...members.map((m) => {
    const li = document.createElement("li");
    li.dataset.member = m.id;
    li.innerHTML = `<b class="${mark(m.id)}">&nbsp;${m.id[0].toUpperCase()}&nbsp;</b> `;
    li.append(`${m.id}${m.id === user ? " (you)" : ""}: ${m.role}, ${m.status}`);
    return li;
  }));

  // the owner invites the demo users who are not members yet
  $("invites").replaceChildren(...(owner ? users.filter((u) => !members.some((m) => m.id === u)) : []).map((u) => {
    const b = document.createElement("button");
    b.dataset.invite = u;
    b.textContent = `Invite ${u}`;
    b.onclick = () => store.add("_members", u, { role: "writer", status: "invited" }).catch((e) => say(e.message));
    const p = document.createElement("p");
    p.append(b, " then send them ");
    const a = document.createElement("a");
    a.href = link(u, match);
    a.target = "_blank";
    a.textContent = "this link";
    p.append(a);
    return p;
  }));
  show("accept-box", me?.status === "invited");

  $("board").classList.toggle("locked", !canPlay);
  $("board-note").textContent = canPlay ? "Click a square to move." :
    me ? "Accept the invitation to play." : "Waiting for this match's players…";

  // the board: each square shows its latest move
  const moves = (await store.query("Moves", {})).sort((a, b) => a.at - b.at || (a.id < b.id ? -1 : 1));
  const top = new Map();
  for (const m of moves) top.set(m.cell, m);
  for (const b of $("board").children) {
    const m = top.get(Number(b.dataset.cell));
    b.className = `cell${m ? ` ${mark(m.by)}` : ""}`;
    b.textContent = m ? m.by[0].toUpperCase() : "";
  }
  $("moves").replaceChildren(...moves.map((m) => {
    const li = document.createElement("li");
    li.dataset.move = m.id;
    li.textContent = `${m.by} took square ${m.cell} at ${m.at.toLocaleTimeString()}`;
    return li;
  }));
}

async function main() {
  $("who").textContent = user ? `You are ${user}` : "";
  if (!user || !config.users[user]) return pickScreen();
  if (!match) return lobbyScreen();
  await gameScreen();
}

main().catch((e) => say(`${e.code ? `${e.code}: ` : ""}${e.message}`));
