// upstream.mjs: a real oidc-provider (the certified OpenID provider package) as the broker's upstream IdP.
//
// Usage: node upstream.mjs --port 0 --mode nonce|dpop|nodpop|rsaonly|bearer|okta \
//          --redirect-uri http://127.0.0.1:8080/login/callback [--client-id broker] [--client-secret S] \
//          [--signing-key FILE] [--backchannel-logout-uri URL]
//          [--client-auth client_secret_basic|client_secret_post|private_key_jwt] [--jwks-uri URL]
//          [--require-par]
//
// Prints exactly one line "READY http://127.0.0.1:PORT" once listening (the issuer, no trailing slash).
// Mode okta is set up like an Okta custom authorization server: the provider is mounted under
// /oauth2/default (issuer http://127.0.0.1:PORT/oauth2/default, printed on the READY line) with
// Okta's endpoint paths below it (/v1/authorize, /v1/token, /v1/userinfo, /v1/keys, /v1/logout,
// /v1/revoke, /v1/introspect, /v1/par) and DPoP with a server nonce always required, so the first token
// request is answered use_dpop_nonce as Okta does; tokens are DPoP-bound and userinfo wants ath.
// No manual UI: interactions complete automatically as account "alice" with consent for what was asked,
// so a cookie-jar HTTP client that follows redirects finishes the flow. GET /__stats answers
// {token_requests, nonce_challenges, token_types, dpop_proofs, nonce_proofs, authorization_requests,
// userinfo_requests, backchannel_logouts, authorization_params, par_requests, par_dpop_proofs,
// par_nonce_challenges, request_uri_authorizations}, where authorization_params are the
// login_hint, acr_values, ui_locales, display and prompt of the last authorization request (query
// or pushed body). Account alice has groups ["engineering", "admins"], released with scope groups.
// --client-auth registers the client (the broker) with that token_endpoint_auth_method and makes it
// the only one discovery lists (token_endpoint_auth_methods_supported); private_key_jwt needs
// --jwks-uri, the broker's client-authentication JWK Set, which oidc-provider fetches. Without it
// the client uses client_secret_basic and discovery lists oidc-provider's defaults.
// --require-par sets require_pushed_authorization_requests: every authorization request must be
// pushed (RFC 9126) to the pushed_authorization_request_endpoint (/request; /v1/par in mode okta). Each token request is
// logged on stdout as a JSON line (presence of DPoP proof and nonce only: never a code, proof or token).
// POST ISSUER/__dpop_nonce?require=false|true (modes nonce, dpop, rsaonly, okta) swaps in a provider
// built like a new deployment behind the same issuer (same keys, client and stored grants): false =
// DPoP without server nonces (no nonce secret, so a proof carrying a nonce is refused with
// invalid_dpop_proof "DPoP nonces are not supported"), true = nonces required, with a fresh nonce
// secret. Answers 204.
// --backchannel-logout-uri turns on oidc-provider's back-channel logout (OpenID Connect
// Back-Channel Logout 1.0): the client (the broker) is registered with that
// backchannel_logout_uri and backchannel_logout_session_required, so its ID tokens carry the
// upstream session's sid, and ending the session at the end_session_endpoint (GET /session/end,
// then the confirmation form's #upstream-logout button, which posts logout=yes) POSTs a logout
// token there before the browser sees #upstream-signed-out. /__stats then also counts
// {backchannel_logouts: {succeeded, failed}}; each is logged as one JSON line (the error message
// only). The logout and signed-out pages load nothing from outside 127.0.0.1 (oidc-provider's
// defaults import a web font), and the provider's outgoing calls may reach loopback addresses.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const MODES = ['nonce', 'dpop', 'nodpop', 'rsaonly', 'bearer', 'okta'];

const USAGE = `Usage: node upstream.mjs --redirect-uri URL [--port 0] [--host 127.0.0.1]
         [--mode ${MODES.join('|')}] [--client-id broker] [--client-secret S]
         [--signing-key FILE] [--backchannel-logout-uri URL]
         [--client-auth client_secret_basic|client_secret_post|private_key_jwt] [--jwks-uri URL]
         [--require-par]
A real oidc-provider as the broker's upstream IdP for the interop tests; prints
"READY http://127.0.0.1:PORT" (its issuer) once listening. The comment at the top of
upstream.mjs describes every option and mode.`;

let parsed;
try {
  parsed = parseArgs({ options: {
    help: { type: 'boolean', short: 'h', default: false },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    mode: { type: 'string', default: 'nonce' },
    'client-id': { type: 'string', default: 'broker' },
    'client-secret': { type: 'string', default: 'interop-upstream-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'signing-key': { type: 'string' },
    'backchannel-logout-uri': { type: 'string', default: '' },
    'client-auth': { type: 'string', default: '' },
    'jwks-uri': { type: 'string', default: '' },
    'require-par': { type: 'boolean', default: false },
  } });
} catch (err) {
  console.error(`upstream: ${err.message}\n${USAGE}`);
  process.exit(2);
}
const { values: args } = parsed;
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const CLIENT_AUTH = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
if (args['client-auth'] !== '' && !CLIENT_AUTH.includes(args['client-auth'])) {
  console.error(`upstream: unknown --client-auth ${JSON.stringify(args['client-auth'])} (use ${CLIENT_AUTH.join(', ')})`);
  process.exit(2);
}
if (args['client-auth'] === 'private_key_jwt' && args['jwks-uri'] === '') {
  console.error('upstream: --client-auth private_key_jwt needs --jwks-uri (the broker\'s client-authentication JWK Set)');
  process.exit(2);
}

if (!MODES.includes(args.mode)) {
  console.error(`upstream: unknown --mode ${JSON.stringify(args.mode)} (use ${MODES.join(', ')})`);
  process.exit(2);
}
if (args['redirect-uri'].length === 0) {
  console.error('upstream: --redirect-uri is required (the broker\'s public_url + "/login/callback")');
  process.exit(2);
}

const mode = args.mode;
const log = (msg, attrs = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), msg, mode, ...attrs }));

// Fresh keys per run: ID-token signing key (RS256) and cookie/nonce secrets. Nothing is committed.
// The signing key is the private JWK in the file --signing-key names when given (the Go tests
// generate one per test run for all their peers: RSA generation is half of a peer's start-up),
// else generated here, directly as a JWK: exporting a freshly generated KeyObject can deadlock
// Node.js 20 (a garbage collection during the export frees the key-generation job, whose
// destructor takes the lock the export holds; seen as a peer that never prints READY).
const privateKey = args['signing-key']
  ? JSON.parse(fs.readFileSync(args['signing-key'], 'utf8'))
  : crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { format: 'jwk' },
    privateKeyEncoding: { format: 'jwk' },
  }).privateKey;
if (privateKey.kty !== 'RSA' || !privateKey.d) {
  console.error(`upstream: --signing-key ${args['signing-key']} is not a private RSA JWK`);
  process.exit(2);
}
const signingJwk = { ...privateKey, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };

const account = {
  sub: 'alice',
  name: 'Alice Example',
  email: 'alice@example.com',
  email_verified: true,
  groups: ['engineering', 'admins'],
};

const dPoP = {
  nonce: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true },
  dpop: { enabled: true },
  nodpop: { enabled: false },
  rsaonly: { enabled: true },
  bearer: { enabled: false }, // discovery is rewritten below to advertise ES256 anyway
  okta: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true },
}[mode];

// Okta mounts each authorization server under /oauth2/ID with /v1/... endpoints; the other modes
// use oidc-provider's defaults at the root.
const okta = mode === 'okta';
const mountPath = okta ? '/oauth2/default' : '';
const routes = okta ? {
  authorization: '/v1/authorize',
  token: '/v1/token',
  userinfo: '/v1/userinfo',
  jwks: '/v1/keys',
  end_session: '/v1/logout',
  revocation: '/v1/revoke',
  introspection: '/v1/introspect',
  pushed_authorization_request: '/v1/par',
} : {
  authorization: '/auth',
  token: '/token',
  userinfo: '/me',
  pushed_authorization_request: '/request',
};

const backchannelLogoutUri = args['backchannel-logout-uri'];

// The end_session pages, plain and self-contained: the confirmation (oidc-provider's form with
// its xsrf field, and a button posting logout=yes: end the whole session) and the result.
const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body style="font-family: sans-serif; margin: 2em"><h1>${title}</h1>${body}</body></html>`;
const rpInitiatedLogout = {
  enabled: true,
  logoutSource: (ctx, form) => {
    ctx.type = 'html';
    ctx.body = page('Sign out of the upstream IdP?', `${form}
<button id="upstream-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>`);
  },
  postLogoutSuccessSource: (ctx) => {
    ctx.type = 'html';
    ctx.body = page('Signed out at the upstream IdP', '<p id="upstream-signed-out">Your upstream session has ended.</p>');
  },
};

const clientAuth = args['client-auth'] || 'client_secret_basic';
const configuration = {
  clients: [{
    client_id: args['client-id'],
    ...(clientAuth === 'private_key_jwt'
      ? { jwks_uri: args['jwks-uri'] }
      : { client_secret: args['client-secret'] }),
    redirect_uris: args['redirect-uri'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: clientAuth,
    ...(backchannelLogoutUri ? {
      backchannel_logout_uri: backchannelLogoutUri,
      backchannel_logout_session_required: true,
    } : {}),
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  pkce: { required: () => true }, // v9 only implements S256
  features: {
    devInteractions: { enabled: false }, // we complete interactions ourselves (below)
    dPoP,
    userinfo: { enabled: true },
    rpInitiatedLogout,
    backchannelLogout: { enabled: Boolean(backchannelLogoutUri) },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: args['require-par'] },
  },
  enabledJWA: mode === 'rsaonly' ? { dPoPSigningAlgValues: ['RS256'] } : undefined,
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Put the scope-requested claims (name, email) into the ID token too, not only into userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  scopes: ['openid', 'profile', 'email', 'groups'],
  interactions: { url: (_ctx, interaction) => `${mountPath}/interaction/${interaction.uid}` },
  findAccount: (_ctx, sub) => (sub === account.sub
    ? { accountId: sub, claims: () => ({ ...account }) }
    : undefined),
  clientBasedCORS: () => false,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  renderError: (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
  // oidc-provider's own calls (the back-channel logout POST) go through a dispatcher that refuses
  // special-use addresses such as 127.0.0.1, where every peer of these tests listens: drop it.
  // Its 2.5 s timeout becomes 30 s, a bound for loaded test machines.
  fetch: (url, options) => {
    const { dispatcher: _ssrfGuard, ...rest } = options;
    return globalThis.fetch(url, { ...rest, signal: AbortSignal.timeout(30000) });
  },
};
if (configuration.enabledJWA === undefined) delete configuration.enabledJWA;
if (args['client-auth'] !== '') configuration.clientAuthMethods = [clientAuth];
if (okta) configuration.routes = routes;

// Bind first so the issuer carries the real port.
const { createServer } = await import('node:http');
const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), args.host, resolve);
});
const issuer = `http://${args.host}:${server.address().port}${mountPath}`;

// newProvider builds the provider with the DPoP feature configuration dPoPFeature. The default
// in-memory adapter keeps its store module-wide, so a provider built later (POST /__dpop_nonce)
// sees the grants and sessions of the one before.
function newProvider(dPoPFeature) {
  const p = new Provider(issuer, {
    ...configuration,
    jwks: { keys: [{ ...signingJwk }] },
    clients: configuration.clients.map((c) => ({ ...c })),
    features: { ...configuration.features, dPoP: dPoPFeature },
  });
  p.use(track);
  p.on('server_error', (_ctx, err) => log('server_error', { error: String(err) }));
  p.on('grant.error', (_ctx, err) => log('grant_error', { error: err.error, error_description: err.error_description }));
  p.on('authorization.error', (_ctx, err) => log('authorization_error', { error: err.error, error_description: err.error_description }));
  p.on('backchannel.success', () => {
    stats.backchannel_logouts.succeeded += 1;
    log('backchannel_logout', { result: 'succeeded' });
  });
  p.on('backchannel.error', (_ctx, err) => {
    stats.backchannel_logouts.failed += 1;
    log('backchannel_logout', { result: 'failed', error: String(err?.message ?? err) });
  });
  return p;
}

const stats = {
  token_requests: 0,
  nonce_challenges: 0,
  dpop_proofs: 0,
  nonce_proofs: 0,
  token_types: [],
  authorization_requests: 0,
  userinfo_requests: 0,
  backchannel_logouts: { succeeded: 0, failed: 0 },
  authorization_params: {},
  par_requests: 0,
  par_dpop_proofs: 0,
  par_nonce_challenges: 0,
  request_uri_authorizations: 0,
};

// The authorization request parameters /__stats reports (never state, nonce, PKCE or codes).
const REPORTED_PARAMS = ['login_hint', 'acr_values', 'ui_locales', 'display', 'prompt'];

// proofNonce reports whether a DPoP proof carries a nonce claim (decoded without verification:
// oidc-provider does the verification; we only count).
function proofNonce(proof) {
  try {
    const payload = JSON.parse(Buffer.from(proof.split('.')[1], 'base64url').toString('utf8'));
    return typeof payload.nonce === 'string' && payload.nonce !== '';
  } catch {
    return false;
  }
}

// track serves /__stats and the interactions, and counts and logs what each request did.
async function track(ctx, next) {
  if (ctx.path === '/__stats' && ctx.method === 'GET') {
    ctx.type = 'json';
    ctx.body = stats;
    return;
  }

  if (ctx.path.startsWith('/interaction/')) {
    await interaction(ctx);
    return;
  }

  const route = ctx.path;
  const proof = ctx.get('DPoP');
  await next();

  if (route === '/.well-known/openid-configuration' && mode === 'bearer' && ctx.status === 200 && ctx.body) {
    // Advertise DPoP although the feature is off: the token endpoint ignores the DPoP header and
    // answers token_type Bearer (the "bound-vs-bearer" interop case).
    ctx.body = { ...ctx.body, dpop_signing_alg_values_supported: ['ES256'] };
  }

  if (route === routes.authorization || route.startsWith(`${routes.authorization}/`)) {
    stats.authorization_requests += 1;
    if (ctx.method === 'GET' && ctx.query.request_uri) stats.request_uri_authorizations += 1;
  }
  if (route === routes.pushed_authorization_request && ctx.method === 'POST') {
    stats.par_requests += 1;
    const nonceChallenge = ctx.status === 400 && ctx.body?.error === 'use_dpop_nonce';
    if (nonceChallenge) stats.par_nonce_challenges += 1;
    if (proof) stats.par_dpop_proofs += 1;
    log('par_request', {
      status: ctx.status,
      dpop_proof: Boolean(proof),
      nonce_challenge: nonceChallenge,
      error: ctx.status === 201 ? undefined : ctx.body?.error,
      error_description: ctx.status === 201 ? undefined : ctx.body?.error_description,
    });
  }
  if (route === routes.authorization) { // the request itself, not its resumption after login
    const params = ctx.oidc?.params ?? ctx.query;
    stats.authorization_params = Object.fromEntries(REPORTED_PARAMS
      .filter((k) => typeof params?.[k] === 'string').map((k) => [k, params[k]]));
  }
  if (route === routes.userinfo) {
    stats.userinfo_requests += 1;
    log('userinfo_request', { dpop_proof: proof !== '', status: ctx.status });
  }
  if (route === routes.token && ctx.method === 'POST') {
    stats.token_requests += 1;
    const nonceChallenge = ctx.status === 400 && ctx.body?.error === 'use_dpop_nonce';
    if (nonceChallenge) stats.nonce_challenges += 1;
    if (proof) stats.dpop_proofs += 1;
    if (proof && proofNonce(proof)) stats.nonce_proofs += 1;
    const tokenType = ctx.status === 200 ? ctx.body?.token_type : undefined;
    if (tokenType) stats.token_types.push(tokenType);
    log('token_request', {
      status: ctx.status,
      dpop_proof: Boolean(proof),
      dpop_proof_nonce: Boolean(proof) && proofNonce(proof),
      nonce_challenge: nonceChallenge,
      dpop_nonce_header: Boolean(ctx.response.get('DPoP-Nonce')),
      error: ctx.status === 200 ? undefined : ctx.body?.error,
      error_description: ctx.status === 200 ? undefined : ctx.body?.error_description,
      token_type: tokenType,
    });
  }
}

let provider = newProvider(dPoP);
let callback = provider.callback();

// switchNonce answers POST /__dpop_nonce?require=…: the next requests go to a provider with or
// without server nonces. It reports whether it handled the request.
function switchNonce(req, res) {
  const url = new URL(req.url, 'http://upstream');
  if (url.pathname !== `${mountPath}/__dpop_nonce`) return false;
  const want = url.searchParams.get('require');
  if (req.method !== 'POST' || !['true', 'false'].includes(want) || !dPoP.enabled) {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_request', error_description: 'POST /__dpop_nonce?require=true|false, in a DPoP mode' }));
    return true;
  }
  const feature = want === 'true'
    ? { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true }
    : { enabled: true };
  provider = newProvider(feature);
  callback = provider.callback();
  log('dpop_nonce_switched', { require_nonce: want === 'true' });
  res.writeHead(204);
  res.end();
  return true;
}

// interaction auto-completes: the login prompt as "alice", the consent prompt by granting exactly
// what is missing (scopes and claims), then redirects back to the authorization endpoint.
async function interaction(ctx) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: account.sub } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unexpected prompt ${prompt.name}` };
  }
  log('interaction', { prompt: prompt.name });
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

if (okta) {
  // Mount under /oauth2/default the way express's app.use(path, …) does: oidc-provider derives
  // its mount path from req.originalUrl minus req.url. Anything outside the mount is 404.
  server.on('request', (req, res) => {
    if (switchNonce(req, res)) return;
    const path = req.url.split('?')[0];
    if (path !== mountPath && !path.startsWith(`${mountPath}/`)) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errorCode: 'E0000022', errorSummary: 'The endpoint does not support the provided HTTP method' }));
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
    callback(req, res);
  });
} else {
  server.on('request', (req, res) => {
    if (!switchNonce(req, res)) callback(req, res);
  });
}

const shutdown = () => process.exit(0);
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

console.log(`READY ${issuer}`);
