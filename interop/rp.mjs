// rp.mjs: a downstream app (relying party) built on openid-client v6, logging in through the broker.
//
// Usage: node rp.mjs --port 0 --issuer http://127.0.0.1:8080/ --client-id app --client-secret S
//          [--dpop [--dpop-alg ES256]] [--audience API] [--login-hint HINT] [--listen-fd 3 (instead of --port)]
//
// Prints "READY http://127.0.0.1:PORT" once listening. Discovery runs lazily on the first /login, so
// the app may start before the broker. GET /login redirects to the broker (PKCE S256, state, nonce,
// and login_hint: /login's own login_hint query parameter, else --login-hint);
// GET /callback runs authorizationCodeGrant (state, PKCE, nonce, iss and ID-token checks by the
// library) then fetchUserInfo, and answers JSON {claims, userinfo, token_type, id_token_alg} plus,
// with --dpop, dpop_jkt (RFC 7638 thumbprint of the RP's DPoP public key) and the access token's
// cnf.jkt / aud when it is a JWT (at_cnf_jkt, at_aud).
// The callback also sets an rp_sess cookie; GET /logout then sends the browser to the broker's
// end_session_endpoint built by openid-client (buildEndSessionUrl: id_token_hint,
// post_logout_redirect_uri http://127.0.0.1:PORT/, state), and GET / answers JSON
// {home: true, state, state_ok} when the broker sends the browser back. With a refresh token
// (--scope ... offline_access), GET /revoke revokes it at the broker's revocation_endpoint
// (tokenRevocation) and GET /refresh tries it (refreshTokenGrant); both answer JSON.
// An OAuth error or a failed check answers 400/502 JSON {error, error_description, stage}.
// The redirect URI is http://127.0.0.1:PORT/callback. Never prints a token or code.
import * as crypto from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import * as client from 'openid-client';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'listen-fd': { type: 'string' },
    issuer: { type: 'string' },
    'client-id': { type: 'string', default: 'interop-app' },
    'client-secret': { type: 'string', default: '' },
    scope: { type: 'string', default: 'openid profile email' },
    connection: { type: 'string', default: '' },
    dpop: { type: 'boolean', default: false },
    'dpop-alg': { type: 'string', default: 'ES256' },
    audience: { type: 'string', default: '' },
    'login-hint': { type: 'string', default: '' },
  },
});
if (!args.issuer) {
  console.error('rp: --issuer is required (the broker issuer, exactly as configured)');
  process.exit(2);
}

const log = (msg, attrs = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...attrs }));

let config; // openid-client Configuration, discovered on first use
async function getConfig() {
  if (!config) {
    const auth = args['client-secret'] ? client.ClientSecretBasic(args['client-secret']) : client.None();
    config = await client.discovery(
      new URL(args.issuer),
      args['client-id'],
      args['client-secret'] ? { client_secret: args['client-secret'] } : undefined,
      auth,
      // 60 s per request: a bound for loaded test machines, not an expectation.
      { execute: [client.allowInsecureRequests], timeout: 60 },
    );
    log('discovered', { issuer: config.serverMetadata().issuer });
  }
  return config;
}

const pending = new Map(); // rp_tx cookie -> {state, nonce, verifier}
const MAX_PENDING = 1000;
const sessions = new Map(); // rp_sess cookie -> {idToken, logoutState}

function cookie(req, name) {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

let redirectUri;

// jwkThumbprint is the RFC 7638 SHA-256 thumbprint of a public CryptoKey (required members only,
// lexicographic order, no whitespace).
async function jwkThumbprint(publicKey) {
  const jwk = await crypto.webcrypto.subtle.exportKey('jwk', publicKey);
  const members = { EC: ['crv', 'kty', 'x', 'y'], OKP: ['crv', 'kty', 'x'], RSA: ['e', 'kty', 'n'] }[jwk.kty];
  if (!members) throw new Error(`unsupported key type ${jwk.kty}`);
  const canonical = `{${members.map((m) => `${JSON.stringify(m)}:${JSON.stringify(jwk[m])}`).join(',')}}`;
  return crypto.createHash('sha256').update(canonical).digest('base64url');
}

// dpopKeyPair is a fresh DPoP key pair for alg, like openid-client's randomDPoPKeyPair (public key
// extractable, private key not), but generated as JWKs and imported: exporting the public key of a
// freshly generated pair (every proof carries it) can deadlock Node.js 20 when a garbage collection
// frees the key-generation job during the export (its destructor takes the lock the export holds).
async function dpopKeyPair(alg) {
  const kinds = {
    ES256: ['ec', { namedCurve: 'P-256' }, { name: 'ECDSA', namedCurve: 'P-256' }],
    RS256: ['rsa', { modulusLength: 2048 }, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }],
    PS256: ['rsa', { modulusLength: 2048 }, { name: 'RSA-PSS', hash: 'SHA-256' }],
    EdDSA: ['ed25519', {}, { name: 'Ed25519' }],
    Ed25519: ['ed25519', {}, { name: 'Ed25519' }],
  };
  if (!kinds[alg]) return client.randomDPoPKeyPair(alg);
  const [type, options, algorithm] = kinds[alg];
  const { publicKey, privateKey } = crypto.generateKeyPairSync(type, {
    ...options, publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' },
  });
  const { subtle } = crypto.webcrypto;
  return {
    privateKey: await subtle.importKey('jwk', privateKey, algorithm, false, ['sign']),
    publicKey: await subtle.importKey('jwk', publicKey, algorithm, true, ['verify']),
  };
}

// jwtPayload decodes a JWT payload without verification (only to report cnf/aud; never printed whole).
function jwtPayload(token) {
  try {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

async function login(req, res, url) {
  const cfg = await getConfig();
  const verifier = client.randomPKCECodeVerifier();
  const tx = { state: client.randomState(), nonce: client.randomNonce(), verifier };
  const params = {
    redirect_uri: redirectUri,
    scope: args.scope,
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state: tx.state,
    nonce: tx.nonce,
  };
  if (args.connection) params.connection = args.connection;
  if (args.audience) params.audience = args.audience;
  // /login?login_hint=… (one login's hint) wins over --login-hint (every login's).
  const hint = url.searchParams.get('login_hint') || args['login-hint'];
  if (hint) params.login_hint = hint;
  const id = crypto.randomBytes(16).toString('base64url');
  if (pending.size >= MAX_PENDING) pending.delete(pending.keys().next().value);
  pending.set(id, tx);
  res.writeHead(302, {
    location: client.buildAuthorizationUrl(cfg, params).href,
    'set-cookie': `rp_tx=${id}; Path=/; HttpOnly; SameSite=Lax`,
    'cache-control': 'no-store',
  });
  res.end();
}

async function callback(req, res, currentUrl) {
  const cfg = await getConfig();
  const id = cookie(req, 'rp_tx');
  const tx = id && pending.get(id);
  if (!tx) {
    json(res, 400, { error: 'rp_no_transaction', error_description: 'no rp_tx cookie or unknown transaction', stage: 'callback' });
    return;
  }
  pending.delete(id);

  let dpopHandle;
  let dpopJkt;
  if (args.dpop) {
    const keyPair = await dpopKeyPair(args['dpop-alg']);
    dpopHandle = client.getDPoPHandle(cfg, keyPair);
    dpopJkt = await jwkThumbprint(keyPair.publicKey);
  }

  let tokens;
  try {
    tokens = await client.authorizationCodeGrant(cfg, currentUrl, {
      pkceCodeVerifier: tx.verifier,
      expectedState: tx.state,
      expectedNonce: tx.nonce,
      idTokenExpected: true,
    }, undefined, dpopHandle ? { DPoP: dpopHandle } : undefined);
  } catch (err) {
    const status = err instanceof client.AuthorizationResponseError ? 400 : 502;
    log('callback_error', { stage: 'authorization_code_grant', name: err?.name, code: err?.code, error: err?.error, message: err?.message });
    json(res, status, {
      error: err?.error ?? err?.code ?? 'rp_error',
      error_description: err?.error_description ?? err?.message,
      stage: 'authorization_code_grant',
    });
    return;
  }

  const claims = tokens.claims();
  let userinfo;
  try {
    // Present the access token the way it was issued: DPoP scheme + proof only for a DPoP token.
    const bound = dpopHandle && tokens.token_type === 'dpop';
    userinfo = await client.fetchUserInfo(cfg, tokens.access_token, claims.sub, bound ? { DPoP: dpopHandle } : undefined);
  } catch (err) {
    log('callback_error', { stage: 'userinfo', name: err?.name, code: err?.code, error: err?.error, message: err?.message });
    json(res, 502, { error: err?.error ?? err?.code ?? 'rp_error', error_description: err?.message, stage: 'userinfo', claims, token_type: tokens.token_type });
    return;
  }
  const idTokenAlg = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString('utf8')).alg;
  const at = jwtPayload(tokens.access_token);
  log('logged_in', { sub: claims.sub, token_type: tokens.token_type, id_token_alg: idTokenAlg, dpop_jkt: dpopJkt });
  const sid = crypto.randomBytes(16).toString('base64url');
  if (sessions.size >= MAX_PENDING) sessions.delete(sessions.keys().next().value);
  sessions.set(sid, { idToken: tokens.id_token, refreshToken: tokens.refresh_token });
  res.setHeader('set-cookie', `rp_sess=${sid}; Path=/; HttpOnly; SameSite=Lax`);
  json(res, 200, {
    claims,
    userinfo,
    token_type: tokens.token_type,
    id_token_alg: idTokenAlg,
    dpop: args.dpop,
    dpop_jkt: dpopJkt,
    at_cnf_jkt: at?.cnf?.jkt,
    at_aud: at?.aud,
    // A userinfo-only access token from the broker is opaque (a JWE): nothing to decode.
    at_opaque: tokens.access_token.split('.').length === 5,
  });
}

async function logout(req, res) {
  const cfg = await getConfig();
  const sess = sessions.get(cookie(req, 'rp_sess') ?? '');
  if (!sess) {
    json(res, 400, { error: 'rp_no_session', error_description: 'no rp_sess cookie or unknown session', stage: 'logout' });
    return;
  }
  sess.logoutState = client.randomState();
  const url = client.buildEndSessionUrl(cfg, {
    id_token_hint: sess.idToken,
    post_logout_redirect_uri: `${self}/`,
    state: sess.logoutState,
  });
  res.writeHead(302, { location: url.href, 'cache-control': 'no-store' });
  res.end();
}

// revoke and refresh use the session's refresh token (never printed).
async function revoke(req, res) {
  const cfg = await getConfig();
  const sess = sessions.get(cookie(req, 'rp_sess') ?? '');
  if (!sess?.refreshToken) {
    json(res, 400, { error: 'rp_no_refresh_token', stage: 'revoke' });
    return;
  }
  await client.tokenRevocation(cfg, sess.refreshToken, { token_type_hint: 'refresh_token' });
  json(res, 200, { revoked: true });
}

async function refresh(req, res) {
  const cfg = await getConfig();
  const sess = sessions.get(cookie(req, 'rp_sess') ?? '');
  if (!sess?.refreshToken) {
    json(res, 400, { error: 'rp_no_refresh_token', stage: 'refresh' });
    return;
  }
  try {
    const tokens = await client.refreshTokenGrant(cfg, sess.refreshToken);
    sess.refreshToken = tokens.refresh_token ?? sess.refreshToken;
    json(res, 200, { refreshed: true, token_type: tokens.token_type });
  } catch (err) {
    json(res, 400, { error: err?.error ?? err?.code ?? 'rp_error', error_description: err?.error_description ?? err?.message, stage: 'refresh' });
  }
}

function home(req, res, url) {
  const sess = sessions.get(cookie(req, 'rp_sess') ?? '');
  const state = url.searchParams.get('state');
  json(res, 200, { home: true, state, state_ok: Boolean(sess?.logoutState) && state === sess.logoutState });
}

const server = createServer((req, res) => {
  const base = `http://${req.headers.host}`;
  const url = new URL(req.url, base);
  let handler;
  if (req.method === 'GET' && url.pathname === '/login') handler = login(req, res, url);
  else if (req.method === 'GET' && url.pathname === '/callback') handler = callback(req, res, url);
  else if (req.method === 'GET' && url.pathname === '/healthz') handler = Promise.resolve(json(res, 200, { ok: true }));
  else if (req.method === 'GET' && url.pathname === '/logout') handler = logout(req, res);
  else if (req.method === 'GET' && url.pathname === '/revoke') handler = revoke(req, res);
  else if (req.method === 'GET' && url.pathname === '/refresh') handler = refresh(req, res);
  else if (req.method === 'GET' && url.pathname === '/') handler = Promise.resolve(home(req, res, url));
  else handler = Promise.resolve(json(res, 404, { error: 'not_found' }));
  handler.catch((err) => {
    log('server_error', { path: url.pathname, message: err?.message, code: err?.code });
    if (!res.headersSent) json(res, 502, { error: err?.code ?? 'rp_error', error_description: err?.message, stage: url.pathname });
  });
});

// --listen-fd N serves on a listening socket the parent opened and passed as descriptor N (the
// parent knows the port before the app starts, and no other process can take it meanwhile);
// otherwise bind --host:--port.
await new Promise((resolve, reject) => {
  server.once('error', reject);
  if (args['listen-fd'] !== undefined) server.listen({ fd: Number(args['listen-fd']) }, resolve);
  else server.listen(Number(args.port), args.host, resolve);
});
const self = `http://${args['listen-fd'] !== undefined ? server.address().address : args.host}:${server.address().port}`;
redirectUri = `${self}/callback`;

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

console.log(`READY ${self}`);
