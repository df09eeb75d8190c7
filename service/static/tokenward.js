/**
 * tokenward.js: the Tokenward browser client. One ES module, no dependencies.
 *
 * Served by Tokenward at `GET /client/tokenward.js`; source in the repository at
 * `service/static/tokenward.js`. The refresh token lives in an HttpOnly cookie this code never
 * sees; the access token lives in this module's memory only (never in storage).
 *
 *   // baseUrl: where the browser reaches Tokenward's /oauth/* (see docs/browser-sessions.md)
 *   import { TokenwardClient } from "https://app.example.com/client/tokenward.js";
 *   const tw = new TokenwardClient({ baseUrl: "https://app.example.com" });
 *   tw.addEventListener("signedin", () => ...);
 *   tw.addEventListener("signedout", (e) => ...);   // e.detail: { reason, confirmed, remote }
 *     // reason: "logout" | "logout_everywhere" | "invalid_grant" (ended elsewhere, expired) |
 *     //         "no_session" (no cookie at start) | "access_denied" (origin not allowed) | another §5.2 error
 *   tw.addEventListener("token", (e) => ...);       // e.detail: { expiresAt, scope, source: "refresh"|"tab"|"login" }
 *   await tw.start();                    // true when signed in (a token from another tab, or a refresh)
 *   tw.signedIn(loginResponseBody);      // after your login backend answered { access_token, expires_in, ... }
 *   const resp = await tw.fetch("/api/x", init);  // adds the Bearer; a 401 -> at most one refresh + one retry
 *   const token = await tw.getToken();   // a valid access token string, or null when signed out
 *   await tw.logout();                   // end this session; every tab of the origin signs out at once
 *   await tw.logoutEverywhere();         // end every session of the user (DELETE /v1/me/sessions)
 *   await tw.listSessions();             // GET /v1/me/sessions ("my devices")
 *   await tw.revokeSession(sid);         // DELETE /v1/me/sessions/{sid}
 *   tw.state;                            // "unknown" | "signedin" | "signedout"
 *   tw.close();                          // stop timers and leave the tab channel
 *
 * Options: baseUrl (required), refreshLead (fraction of the lifetime refreshed early, 0.25),
 * maxAttempts (tries per refresh before waiting for the next round, 6), name (channel and lock
 * name, for two clients on one origin), peerWait (ms a new tab waits for another tab's token, 150).
 *
 * How it behaves:
 * - Refresh: at 75% of the access token's lifetime (at most 60 s early) plus up to 10% jitter, so
 *   tabs do not fire together. Every refresh runs under one lock per origin: the Web Locks API,
 *   or, where it is missing, a lock negotiated over BroadcastChannel. Whoever holds the lock
 *   first checks whether another tab already refreshed (then it takes that token and sends no
 *   request). The refresher announces "refreshing" first, so a tab that gets the lock before the
 *   new token's message waits for it (up to 1 s) instead of refreshing again. The new token goes
 *   to every tab over BroadcastChannel; a new tab asks the others before refreshing itself.
 * - Network failure, 429, 5xx: retried with capped exponential backoff (Retry-After honoured),
 *   resumed at once when the browser comes back online. A retry sends the same cookie, so if the
 *   server had already rotated it (the answer was lost) its grace window returns the same
 *   successor instead of calling it theft. After maxAttempts the client keeps its state and tries
 *   again later; it never signs out for a transient error.
 * - 400 invalid_grant (or any other 400/401/403 from the token endpoint): the session is over (or
 *   this origin is not allowed): every tab signs out ("signedout" with the server's error).
 * - client.fetch: a token still valid for a second serves the call even if its refresh is due
 *   (the refresh runs in the background). A 401 triggers at most one refresh (skipped when
 *   another tab already has a newer token) and one retry; a second 401 goes to the caller as is.
 * - logout: runs under the refresh lock (no refresh can race it), calls POST /oauth/revoke,
 *   then every tab signs out at once, whatever the server answered (detail.confirmed says).
 */

const CSRF_HEADER = "X-Tokenward-CSRF";
const FORM = "application/x-www-form-urlencoded";
const HANDOFF_MS = 50;
const PEER_WAIT_MS = 1000;
const VALID_MARGIN_MS = 1000;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("wake", done);
      resolve();
    }
    if (signal) signal.addEventListener("wake", done);
  });
}

function randomId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Seconds from a Retry-After header (delta form only), or null. */
function retryAfter(resp) {
  const value = Number(resp.headers.get("Retry-After"));
  return Number.isFinite(value) && value >= 0 ? Math.min(value, 60) * 1000 : null;
}

/**
 * A lock shared by the tabs of one origin over BroadcastChannel, for browsers without Web Locks.
 *
 * A tab claims with (time, random id) and listens for CLAIM_WAIT ms; the smallest claim wins,
 * a holder answers every claim with "held". Should two tabs still both win (a message slower
 * than CLAIM_WAIT), both refresh the same token and the server's grace window gives both the same
 * successor, so a lost race costs one request, never the session.
 */
class ChannelLock {
  static CLAIM_WAIT = 60;
  static LEASE = 15000;

  constructor(channel) {
    this.channel = channel;
    this.holding = null; // our id while we hold the lock
    this.claiming = null; // our claim while we wait
    this.heldUntil = 0; // another tab holds the lock until then (its lease)
    this.beaten = false;
    this.rival = null; // the latest claim another tab made while we were neither claiming nor holding
    this.wake = new EventTarget();
  }

  /** Whether ``other`` (a claim) comes before ``mine``: the earlier time, then the smaller id. */
  static first(other, mine) {
    return other.at < mine.at || (other.at === mine.at && other.id < mine.id);
  }

  onMessage(msg) {
    if (msg.t === "lock-claim") {
      if (this.holding) {
        this.channel.postMessage({ t: "lock-held", id: this.holding, until: Date.now() + ChannelLock.LEASE });
      } else if (this.claiming) {
        if (ChannelLock.first(msg, this.claiming)) this.beaten = true;
      } else {
        // Kept: a claim that reached us just before we claimed ourselves still wins, though its
        // "held" comes only after its own wait, which may end after ours.
        this.rival = { at: msg.at, id: msg.id, seen: Date.now() };
      }
    } else if (msg.t === "lock-held") {
      this.heldUntil = Math.max(this.heldUntil, msg.until);
      if (this.claiming) this.beaten = true;
    } else if (msg.t === "lock-free") {
      this.heldUntil = 0;
      this.wake.dispatchEvent(new Event("wake"));
    }
  }

  async request(fn) {
    for (;;) {
      const wait = this.heldUntil - Date.now();
      if (wait > 0) {
        await sleep(wait, this.wake);
        continue;
      }
      this.claiming = { id: randomId(), at: Date.now() };
      const rival = this.rival;
      this.beaten = Boolean(
        rival && Date.now() - rival.seen < 2 * ChannelLock.CLAIM_WAIT && ChannelLock.first(rival, this.claiming),
      );
      this.channel.postMessage({ t: "lock-claim", ...this.claiming });
      await sleep(ChannelLock.CLAIM_WAIT);
      const won = !this.beaten;
      const id = this.claiming.id;
      this.claiming = null;
      if (!won) {
        await sleep(20 + Math.random() * 80, this.wake);
        continue;
      }
      this.holding = id;
      this.channel.postMessage({ t: "lock-held", id, until: Date.now() + ChannelLock.LEASE });
      try {
        return await fn();
      } finally {
        this.holding = null;
        this.channel.postMessage({ t: "lock-free", id });
      }
    }
  }
}

export class TokenwardClient extends EventTarget {
  constructor(options = {}) {
    super();
    if (!options.baseUrl) throw new TypeError("TokenwardClient: baseUrl is required");
    this.baseUrl = String(options.baseUrl).replace(/\/+$/, "");
    this.refreshLead = options.refreshLead ?? 0.25;
    this.maxAttempts = options.maxAttempts ?? 6;
    this.peerWait = options.peerWait ?? 150;
    this.name = options.name ?? `tokenward:${this.baseUrl}`;
    /** Counters, for the curious and for tests. */
    this.stats = { refreshes: 0, received: 0, retries: 0, refreshLog: [], lock: "" };
    this._token = null; // { accessToken, expiresAt, refreshAt, issuedAt, scope }
    this._state = "unknown";
    this._signedOutAt = 0;
    this._peerRefreshAt = 0; // when another tab last said it is refreshing
    this._inflight = null;
    this._timer = null;
    this._wake = new EventTarget();
    this._closed = false;
    this._channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(this.name) : null;
    this._lock = null;
    if (typeof navigator !== "undefined" && navigator.locks && typeof navigator.locks.request === "function") {
      this.stats.lock = "web-locks";
    } else if (this._channel) {
      this._lock = new ChannelLock(this._channel);
      this.stats.lock = "broadcast-channel";
    } else {
      this.stats.lock = "none";
    }
    this._onMessage = (event) => this._handle(event.data || {});
    this._onOnline = () => this._wake.dispatchEvent(new Event("wake"));
    this._onVisible = () => {
      if (document.visibilityState === "visible" && this._state === "signedin" && this._stale()) this._scheduled();
    };
    if (this._channel) this._channel.addEventListener("message", this._onMessage);
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", this._onVisible);
  }

  /** "unknown" until the first answer, then "signedin" or "signedout". */
  get state() {
    return this._state;
  }

  /** The current access token (memory only), or null. It may be about to expire: prefer getToken(). */
  get accessToken() {
    return this._token ? this._token.accessToken : null;
  }

  /** When the current access token expires (ms since the epoch), or null. */
  get expiresAt() {
    return this._token ? this._token.expiresAt : null;
  }

  /** Find out whether we are signed in: ask the other tabs, else refresh from the cookie. */
  async start() {
    if (this._token) return true;
    if (this._channel) {
      this._channel.postMessage({ t: "hello" });
      await sleep(this.peerWait, this._wake);
      if (this._token) return true;
    }
    await this._refresh(null);
    return this._state === "signedin";
  }

  /** Adopt the body your login backend relayed from POST /v1/sessions; every tab gets it. */
  signedIn(body) {
    const token = this._tokenFrom(body, Date.now());
    this._adopt(token, "login");
    this._broadcastToken();
  }

  /** A valid access token, refreshing first when it is due; null when signed out. */
  async getToken() {
    if (this._token && !this._stale()) return this._token.accessToken;
    if (this._state === "signedout") return null;
    const token = await this._refresh(this._token);
    return token ? token.accessToken : null;
  }

  /**
   * fetch() with the access token as Bearer. A 401 leads to at most one refresh (none when another
   * tab already holds a newer token) and one retry; the second answer is returned whatever it is.
   */
  async fetch(input, init = {}) {
    const spare = input instanceof Request ? input.clone() : input;
    // A token past its refresh time but still valid serves this call while a refresh runs in
    // the background: a slow or failing refresh must not hold up calls it need not hold up.
    let used = this._token && Date.now() < this._token.expiresAt - VALID_MARGIN_MS ? this._token : null;
    if (used && this._stale()) this._scheduled();
    let refreshed = false;
    if (!used && this._state !== "signedout") {
      await this.getToken();
      refreshed = true;
      used = this._token;
    }
    const resp = await globalThis.fetch(input, this._withBearer(input, init, used));
    if (resp.status !== 401 || refreshed || this._state === "signedout") return resp;
    if (init.body instanceof ReadableStream) return resp; // a stream cannot be sent twice
    const fresh = await this._refresh(used, { renew: true });
    if (!fresh || (used && fresh.accessToken === used.accessToken)) return resp;
    return globalThis.fetch(spare, this._withBearer(spare, init, fresh));
  }

  /** Log out this session (POST /oauth/revoke with the cookie); every tab signs out at once. */
  async logout() {
    return this._withLock(async () => {
      const confirmed = await this._revokeCookie();
      this._signOut("logout", { broadcast: true, confirmed });
      return confirmed;
    });
  }

  /** Log the user out of every device (DELETE /v1/me/sessions); then as logout(). */
  async logoutEverywhere() {
    const resp = await this.fetch(`${this.baseUrl}/v1/me/sessions`, { method: "DELETE", credentials: "omit" });
    return this._withLock(async () => {
      // The session is gone already; revoking clears the now useless cookie.
      await this._revokeCookie();
      this._signOut("logout_everywhere", { broadcast: true, confirmed: resp.ok });
      return resp.ok;
    });
  }

  /** The user's sessions ("my devices"): GET /v1/me/sessions, parsed. */
  async listSessions() {
    const resp = await this.fetch(`${this.baseUrl}/v1/me/sessions`, { credentials: "omit" });
    if (!resp.ok) throw new Error(`GET /v1/me/sessions answered ${resp.status}`);
    const body = await resp.json();
    return Array.isArray(body) ? body : body.sessions || [];
  }

  /** End one of the user's sessions (DELETE /v1/me/sessions/{sid}); true when it was ended. */
  async revokeSession(sid) {
    const url = `${this.baseUrl}/v1/me/sessions/${encodeURIComponent(sid)}`;
    const resp = await this.fetch(url, { method: "DELETE", credentials: "omit" });
    return resp.ok;
  }

  /** Stop timers and leave the tab channel (the session itself is untouched). */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    if (this._channel) {
      this._channel.removeEventListener("message", this._onMessage);
      this._channel.close();
    }
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this._onVisible);
  }

  // -- internals ---------------------------------------------------------------------------

  _withBearer(input, init, token) {
    const headers = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
    if (token) headers.set("Authorization", `Bearer ${token.accessToken}`);
    return { ...init, headers };
  }

  _withLock(fn) {
    if (this.stats.lock === "web-locks") return navigator.locks.request(this.name, fn);
    if (this._lock) return this._lock.request(fn);
    return fn();
  }

  _stale(token = this._token) {
    return !token || Date.now() >= token.refreshAt;
  }

  _tokenFrom(body, sentAt) {
    // Lifetimes count from when the request left, so a slow answer errs on the early side.
    const lifetime = Math.max(Number(body.expires_in) || 0, 1) * 1000;
    const lead = Math.min(lifetime * this.refreshLead, 60000) + Math.random() * Math.min(lifetime * 0.1, 10000);
    return {
      accessToken: body.access_token,
      issuedAt: sentAt,
      expiresAt: sentAt + lifetime,
      refreshAt: sentAt + lifetime - lead,
      scope: body.scope || "",
    };
  }

  /** Take a token: remember it, re-arm the timer, tell the app. */
  _adopt(token, source) {
    const wasIn = this._state === "signedin";
    this._token = token;
    this._state = "signedin";
    this._arm();
    this.dispatchEvent(new CustomEvent("token", { detail: { expiresAt: token.expiresAt, scope: token.scope, source } }));
    if (!wasIn) this.dispatchEvent(new CustomEvent("signedin", { detail: { source } }));
  }

  _broadcastToken() {
    if (!this._channel || !this._token) return;
    const t = this._token;
    this._channel.postMessage({ t: "token", accessToken: t.accessToken, issuedAt: t.issuedAt, expiresAt: t.expiresAt, scope: t.scope });
  }

  _signOut(reason, { broadcast = false, confirmed = undefined } = {}) {
    clearTimeout(this._timer);
    const wasOut = this._state === "signedout";
    this._token = null;
    this._state = "signedout";
    this._signedOutAt = Date.now();
    if (broadcast && this._channel) this._channel.postMessage({ t: "signedout", reason, at: this._signedOutAt });
    if (!wasOut) this.dispatchEvent(new CustomEvent("signedout", { detail: { reason, confirmed, remote: !broadcast } }));
  }

  _handle(msg) {
    if (this._closed) return;
    if (this._lock && msg.t && msg.t.startsWith("lock-")) {
      this._lock.onMessage(msg);
    } else if (msg.t === "hello") {
      if (this._token && Date.now() < this._token.expiresAt) this._broadcastToken();
    } else if (msg.t === "token") {
      // A token minted before a logout we saw is a straggler from the ended session.
      if (msg.issuedAt < this._signedOutAt) return;
      if (this._token && this._token.expiresAt >= msg.expiresAt) return;
      this.stats.received += 1;
      const lifetime = msg.expiresAt - msg.issuedAt;
      const lead = Math.min(lifetime * this.refreshLead, 60000) + Math.random() * Math.min(lifetime * 0.1, 10000);
      const token = { accessToken: msg.accessToken, issuedAt: msg.issuedAt, expiresAt: msg.expiresAt, refreshAt: msg.expiresAt - lead, scope: msg.scope };
      this._adopt(token, "tab");
      this._wake.dispatchEvent(new Event("wake"));
    } else if (msg.t === "refreshing") {
      this._peerRefreshAt = msg.at;
    } else if (msg.t === "refresh-failed") {
      this._peerRefreshAt = 0;
      this._wake.dispatchEvent(new Event("wake"));
    } else if (msg.t === "signedout") {
      if (msg.at < (this._token ? this._token.issuedAt : 0)) return; // we hold a newer login
      this._peerRefreshAt = 0;
      this._signOut(msg.reason || "logout");
      this._wake.dispatchEvent(new Event("wake"));
    }
  }

  _arm(delay) {
    clearTimeout(this._timer);
    if (this._closed) return;
    const due = delay ?? Math.max(this._token.refreshAt - Date.now(), 0);
    this._timer = setTimeout(() => this._scheduled(), due);
  }

  _scheduled() {
    if (this._state === "signedout" || this._closed) return;
    this._refresh(this._token).catch(() => {});
  }

  /**
   * One refresh at a time per tab and, through the lock, per origin. ``seen`` is the token that
   * made us want a new one: if the token we hold by the time we have the lock is another, newer
   * one (another tab refreshed and told us), we take it and send nothing.
   */
  _refresh(seen, { renew = false } = {}) {
    if (this._inflight) return this._inflight;
    let settle;
    this._inflight = new Promise((resolve) => {
      settle = resolve;
    }).finally(() => {
      this._inflight = null;
    });
    this._withLock(async () => {
      let token = null;
      let rotated = false;
      try {
        await this._awaitPeerRefresh();
        const now = this._token;
        if (now && now !== seen && !this._stale(now)) {
          token = now; // another tab refreshed while we waited for the lock
        } else if (now && now === seen && !renew && !this._stale(now)) {
          token = now;
        } else if (!(this._state === "signedout" && seen !== null)) {
          rotated = true;
          this._post({ t: "refreshing", at: Date.now() });
          token = await this._rotate();
          if (!token) this._post({ t: "refresh-failed" });
        }
      } catch (err) {
        console.error("tokenward: refresh failed", err);
      }
      settle(token);
      // Hold the lock a moment after broadcasting, so the other tabs have the new token in hand
      // before one of them gets the lock and asks itself whether a refresh is still needed.
      if (rotated && token) await sleep(HANDOFF_MS);
    }).catch((err) => {
      console.error("tokenward: lock failed", err);
      settle(null);
    });
    return this._inflight;
  }

  /**
   * If another tab announced a refresh after our token was issued and its token has not reached
   * us yet (messages and lock grants travel separately), wait for it a little rather than
   * refresh the same cookie a second time.
   */
  async _awaitPeerRefresh() {
    const deadline = Date.now() + PEER_WAIT_MS;
    while (this._peerRefreshAt > (this._token ? this._token.issuedAt : 0) && Date.now() < deadline) {
      await sleep(deadline - Date.now(), this._wake);
    }
    this._peerRefreshAt = 0;
  }

  _post(msg) {
    if (this._channel) this._channel.postMessage(msg);
  }

  /** POST /oauth/token with the cookie, retrying transient failures; the new token or null. */
  async _rotate() {
    for (let attempt = 1; ; attempt += 1) {
      const sentAt = Date.now();
      let resp = null;
      try {
        resp = await globalThis.fetch(`${this.baseUrl}/oauth/token`, {
          method: "POST",
          credentials: "include",
          cache: "no-store",
          headers: { "Content-Type": FORM, [CSRF_HEADER]: "1" },
          body: "grant_type=refresh_token",
        });
      } catch {
        resp = null; // network: the request may or may not have reached the server
      }
      if (resp && resp.ok) {
        const body = await resp.json();
        this.stats.refreshes += 1;
        this.stats.refreshLog.push(sentAt);
        if (this.stats.refreshLog.length > 100) this.stats.refreshLog.shift(); // a long-lived page stays small
        this._adopt(this._tokenFrom(body, sentAt), "refresh");
        this._broadcastToken();
        return this._token;
      }
      if (resp && [400, 401, 403].includes(resp.status)) {
        let error = "invalid_grant";
        try {
          error = (await resp.json()).error || error;
        } catch {
          // not JSON: keep the generic reason
        }
        if (resp.status === 403) console.error("tokenward: the server refused this origin (CSRF check):", error);
        this._signOut(error === "invalid_grant" && this._state === "unknown" ? "no_session" : error, { broadcast: true });
        return null;
      }
      if (this._state === "signedout" || this._closed) return null;
      this.stats.retries += 1;
      const backoff = Math.min(250 * 2 ** (attempt - 1), 4000) * (0.5 + Math.random() / 2);
      const delay = (resp && retryAfter(resp)) ?? backoff;
      if (attempt >= this.maxAttempts) {
        // Keep the state (a transient failure is not a logout) and try again later.
        this._arm(Math.max(delay, 5000));
        return null;
      }
      await sleep(delay, this._wake);
      if (this._state === "signedout" || this._closed) return null; // logged out meanwhile
      if (this._token && this._token.issuedAt > sentAt && !this._stale()) return this._token; // another tab made it
    }
  }

  async _revokeCookie() {
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      try {
        const resp = await globalThis.fetch(`${this.baseUrl}/oauth/revoke`, {
          method: "POST",
          credentials: "include",
          cache: "no-store",
          headers: { "Content-Type": FORM, [CSRF_HEADER]: "1" },
          body: "token_type_hint=refresh_token",
        });
        if (resp.ok) return true;
        if (resp.status < 500 && resp.status !== 429) return false;
      } catch {
        // network: try again shortly
      }
      await sleep(200 * attempt);
    }
    return false;
  }
}

export default TokenwardClient;
