// api-jwtbearer.mjs: a resource server built on Auth0's own express-oauth2-jwt-bearer, trusting the
// broker as its authorization server.
//
// Usage: node api-jwtbearer.mjs --port 0 --issuer-base-url http://127.0.0.1:8080/ --audience API
//          [--dpop-required true|false] [--cors-origin http://127.0.0.1:PAGEPORT]
//
// Prints "READY http://127.0.0.1:PORT" once listening. The middleware discovers the broker through
// issuerBaseURL + /.well-known/openid-configuration (jwks_uri, issuer, and the access-token algs it
// accepts from id_token_signing_alg_values_supported) lazily on the first request, so the API may
// start before the broker. GET /api/whoami answers 200 {sub, client, scope, cnf_jkt, aud} for a valid
// access token (with dpop {enabled: true, required}: a DPoP-bound token, `Authorization: DPoP`, and a
// fresh proof with ath); any failure answers the library's status and WWW-Authenticate with JSON
// {error, error_description, status}. GET /api/admin answers the same for a token whose scope
// includes admin:all (the library's requiredScopes), else 403 insufficient_scope. --cors-origin lets a browser page on that exact origin call
// /api/* (Authorization and DPoP request headers; WWW-Authenticate and DPoP-Nonce exposed).
// Never prints a token or a proof.
import { parseArgs } from 'node:util';

import express from 'express';
import { auth, requiredScopes } from 'express-oauth2-jwt-bearer';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'issuer-base-url': { type: 'string' },
    audience: { type: 'string' },
    'dpop-required': { type: 'string', default: 'true' },
    'cors-origin': { type: 'string', default: '' },
  },
});
if (!args['issuer-base-url'] || !args.audience) {
  console.error('api-jwtbearer: --issuer-base-url and --audience are required');
  process.exit(2);
}

const log = (msg, attrs = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), msg, ...attrs }));

const app = express();
app.disable('x-powered-by');

app.get('/healthz', (_req, res) => res.json({ ok: true }));

if (args['cors-origin']) {
  app.use('/api', (req, res, next) => {
    if (req.get('origin') !== args['cors-origin']) return next();
    res.set({
      'access-control-allow-origin': args['cors-origin'],
      'access-control-expose-headers': 'WWW-Authenticate, DPoP-Nonce',
      vary: 'Origin',
    });
    if (req.method !== 'OPTIONS') return next();
    res.set({
      'access-control-allow-methods': 'GET',
      'access-control-allow-headers': 'Authorization, DPoP, Content-Type',
      'access-control-max-age': '600',
    });
    return res.status(204).end();
  });
}

app.use('/api', auth({
  issuerBaseURL: args['issuer-base-url'],
  audience: args.audience,
  dpop: { enabled: true, required: args['dpop-required'] === 'true' },
  timeoutDuration: 60000, // discovery and JWKS fetches: a bound for loaded test machines (default 5 s)
}));

const whoami = (req, res) => {
  const p = req.auth.payload;
  log('authorized', { sub: p.sub, cnf_jkt: p.cnf?.jkt, scheme: (req.get('authorization') ?? '').split(' ')[0] });
  res.set('cache-control', 'no-store').json({
    sub: p.sub, client: p.azp ?? p.client_id, scope: p.scope, cnf_jkt: p.cnf?.jkt, aud: p.aud,
  });
};
app.get('/api/whoami', whoami);
app.get('/api/admin', requiredScopes('admin:all'), whoami);

// The library's errors carry status and headers (WWW-Authenticate); report them as JSON.
app.use((err, req, res, _next) => {
  const status = err.status ?? err.statusCode ?? 500;
  for (const [k, v] of Object.entries(err.headers ?? {})) res.set(k, v);
  log('denied', {
    path: req.path,
    status,
    error: err.code ?? err.name,
    error_description: err.message,
    dpop_proof: Boolean(req.get('dpop')),
    scheme: (req.get('authorization') ?? '').split(' ')[0],
  });
  res.status(status).set('cache-control', 'no-store').json({ error: err.code ?? err.name, error_description: err.message, status });
});

const server = app.listen(Number(args.port), args.host);
await new Promise((resolve, reject) => {
  server.once('listening', resolve);
  server.once('error', reject);
});
const self = `http://${args.host}:${server.address().port}`;

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));

console.log(`READY ${self}`);
