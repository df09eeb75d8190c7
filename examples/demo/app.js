// The demo page's script: wires the Tokenward browser client to a few buttons. DEMO ONLY.
const base = document.querySelector('meta[name="tokenward-url"]').content.replace(/\/+$/, "");
const clientUrl = `${base}/client/tokenward.js`;
document.getElementById("client-url").textContent = clientUrl;
const { TokenwardClient } = await import(clientUrl);

const tw = new TokenwardClient({ baseUrl: base });
const $ = (id) => document.getElementById(id);
const REASONS = {
  logout: "you logged out (here or in another tab)",
  logout_everywhere: "you logged out everywhere",
  invalid_grant: "this session was ended from another device, or expired",
  no_session: "no session in this browser yet",
  access_denied: "Tokenward refuses this page's origin",
};
// Exposed for the browser tests and for poking at in the console.
const demo = { tw, api: [], events: [], callApi, loadDevices, ready: null };
window.demo = demo;

function render() {
  const state = tw.state === "signedin" ? "signed-in" : tw.state === "signedout" ? "signed-out" : "unknown";
  $("state").dataset.state = state;
  $("state").textContent = { "signed-in": "Signed in", "signed-out": "Signed out", unknown: "checking…" }[state];
  $("signed-in").hidden = state !== "signed-in";
  $("signed-out").hidden = state !== "signed-out";
  $("expiry").textContent = tw.expiresAt ? `access token valid until ${new Date(tw.expiresAt).toLocaleTimeString()}` : "";
}

for (const name of ["signedin", "signedout", "token"]) {
  tw.addEventListener(name, (event) => {
    demo.events.push({ name, at: Date.now(), ...event.detail });
    if (name === "signedout") {
      const why = REASONS[event.detail.reason] || "signed out";
      $("reason").textContent = `Signed out: ${why} (${event.detail.reason}).`;
      $("devices").replaceChildren();
    }
    if (name === "signedin") {
      $("reason").textContent = "";
      loadDevices();
    }
    render();
  });
}

async function callApi() {
  let entry;
  try {
    const resp = await tw.fetch("/api/hello");
    entry = { status: resp.status, body: await resp.text() };
  } catch (err) {
    entry = { status: 0, body: String(err) };
  }
  demo.api.push({ at: Date.now(), ...entry });
  $("api-result").textContent = `${entry.status} ${entry.body}`;
  return entry.status;
}

async function loadDevices() {
  let rows;
  try {
    rows = await tw.listSessions();
  } catch (err) {
    $("devices").innerHTML = "";
    return [];
  }
  const body = $("devices");
  body.replaceChildren(
    ...rows.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.sid = s.id;
      const name = document.createElement("td");
      name.textContent = s.device_name || "(unnamed)";
      if (s.current) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "this device";
        name.append(badge);
      }
      const ua = document.createElement("div");
      ua.className = "muted";
      const agent = s.user_agent || "";
      ua.textContent = agent.length > 60 ? `${agent.slice(0, 60)}…` : agent;
      name.append(ua);
      const cells = [s.created_at, s.last_used_at].map((t) => {
        const td = document.createElement("td");
        td.textContent = new Date(t * (t < 1e12 ? 1000 : 1)).toLocaleTimeString();
        return td;
      });
      const ip = document.createElement("td");
      ip.textContent = s.ip || "";
      const act = document.createElement("td");
      const btn = document.createElement("button");
      btn.className = "danger revoke";
      btn.textContent = s.current ? "Revoke (this device)" : "Revoke";
      btn.addEventListener("click", async () => {
        await tw.revokeSession(s.id);
        if (s.current) await tw.logout();
        else loadDevices();
      });
      act.append(btn);
      tr.append(name, ...cells, ip, act);
      return tr;
    }),
  );
  return rows;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const resp = await fetch("/demo/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(Object.fromEntries(form)),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    $("login-error").textContent = `Sign-in refused (${resp.status}): ${body.detail || body.error || ""}`;
    return;
  }
  $("login-error").textContent = "";
  tw.signedIn(body);
});
$("call-api").addEventListener("click", callApi);
$("reload-devices").addEventListener("click", loadDevices);
$("logout").addEventListener("click", () => tw.logout());
$("logout-all").addEventListener("click", () => tw.logoutEverywhere());

render();
demo.ready = tw.start().then((signedIn) => {
  render();
  return signedIn;
});
