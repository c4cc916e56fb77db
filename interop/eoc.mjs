// eoc.mjs: a server-side web app built on express-openid-connect (the identity SaaS's Express
// library), logging in through the broker, with its backchannelLogout option.
//
// Usage: node eoc.mjs --issuer http://127.0.0.1:8080/ --client-id ID --client-secret S
//          [--port 0 | --listen-fd 3]
//
// Prints "READY http://127.0.0.1:PORT" once listening (the app's baseURL). The library's routes:
// GET /login (to the broker: response_type code, PKCE, state, nonce), GET|POST /callback (code
// grant with client_secret_basic, ID token checks, then an encrypted appSession cookie),
// GET /logout, and POST /backchannel-logout (OpenID Connect Back-Channel Logout 1.0: the library
// verifies the logout token against the broker's jwks_uri, iss, aud, events, no nonce, then marks
// its sid and sub logged out in the store; its auth middleware then drops any session of that sid
// or sub on the user's next request). The library needs a store for those marks: a bounded
// in-memory one here (express-session's interface), enough for one process.
// GET / answers JSON {home: true, authenticated}; GET /me answers 200 JSON {sub, sid, email} while
// the browser's appSession is logged in, else 401 {error: "not_authenticated"}. GET /__stats
// answers {backchannel_logouts: {status: count}} (answers of POST /backchannel-logout), each also
// logged as one JSON line. Discovery runs on the first request that needs it, so the app may start
// before the broker. Never prints a token, code or the appSession secret.
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import express from 'express';
import eoc from 'express-openid-connect';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'listen-fd': { type: 'string' },
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
  },
});
if (!args.issuer || !args['client-id'] || !args['client-secret']) {
  console.error('eoc: --issuer (the broker issuer), --client-id and --client-secret are required');
  process.exit(2);
}

const log = (msg, attrs = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...attrs }));

// MemoryStore is the smallest store the library accepts (express-session's get/set/destroy with
// callbacks): entries expire at their cookie.expires, and at most MAX entries are kept (the oldest
// goes first).
class MemoryStore {
  static MAX = 10000;

  #entries = new Map();

  get(key, cb) {
    const e = this.#entries.get(key);
    if (e && e.expires <= Date.now()) this.#entries.delete(key);
    setImmediate(cb, null, e && e.expires > Date.now() ? e.value : undefined);
  }

  set(key, value, cb) {
    this.#entries.delete(key);
    if (this.#entries.size >= MemoryStore.MAX) this.#entries.delete(this.#entries.keys().next().value);
    const expires = value?.cookie?.expires ? Number(new Date(value.cookie.expires)) : Date.now() + 24 * 3600 * 1000;
    this.#entries.set(key, { value, expires });
    setImmediate(cb, null);
  }

  destroy(key, cb) {
    this.#entries.delete(key);
    setImmediate(cb, null);
  }
}

const app = express();
app.disable('x-powered-by');

const stats = { backchannel_logouts: {} };
app.get('/__stats', (_req, res) => res.set('cache-control', 'no-store').json(stats));
app.use('/backchannel-logout', (req, res, next) => {
  res.on('finish', () => {
    stats.backchannel_logouts[res.statusCode] = (stats.backchannel_logouts[res.statusCode] ?? 0) + 1;
    log('backchannel_logout', { status: res.statusCode, content_type: req.get('content-type') });
  });
  next();
});

// Bind first: the baseURL (and so the redirect URI) carries the real port. The routes below are
// added before READY is printed.
// --listen-fd N serves on a listening socket the parent opened and passed as descriptor N.
const server = await new Promise((resolve, reject) => {
  const s = args['listen-fd'] !== undefined
    ? app.listen({ fd: Number(args['listen-fd']) }, () => resolve(s))
    : app.listen(Number(args.port), args.host, () => resolve(s));
  s.once('error', reject);
});
const self = `http://${args['listen-fd'] !== undefined ? server.address().address : args.host}:${server.address().port}`;

app.use(eoc.auth({
  issuerBaseURL: args.issuer,
  baseURL: self,
  clientID: args['client-id'],
  clientSecret: args['client-secret'],
  secret: crypto.randomBytes(32).toString('base64url'), // appSession encryption, fresh per run
  authRequired: false,
  idpLogout: false,
  authorizationParams: { response_type: 'code', scope: 'openid profile email' },
  backchannelLogout: { store: new MemoryStore() },
  httpTimeout: 60000, // a bound for loaded test machines, not an expectation
}));

app.get('/', (req, res) => res.set('cache-control', 'no-store').json({ home: true, authenticated: req.oidc.isAuthenticated() }));
app.get('/me', (req, res) => {
  res.set('cache-control', 'no-store');
  if (!req.oidc.isAuthenticated()) {
    res.status(401).json({ error: 'not_authenticated' });
    return;
  }
  const c = req.oidc.idTokenClaims;
  res.json({ sub: c.sub, sid: c.sid, email: c.email });
});
app.use((err, req, res, _next) => {
  log('app_error', { path: req.path, message: err?.message, error: err?.error, status: err?.status });
  if (!res.headersSent) res.status(err?.status ?? 500).json({ error: err?.error ?? 'app_error', error_description: err?.message });
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

console.log(`READY ${self}`);
