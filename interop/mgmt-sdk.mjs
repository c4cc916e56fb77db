// mgmt-sdk.mjs: the identity SaaS's Node management SDK (`auth0` v7, pinned by
// package-lock.json) against the broker's management API, through every endpoint the SDK
// offers for connections, clients and logs that the broker serves.
//
// Usage: MGMT_TOKEN=... UPSTREAM_SECRET=... node mgmt-sdk.mjs --base http://127.0.0.1:PORT
//          --connection NAME --client CLIENT_ID --issuer UPSTREAM_ISSUER
//
// The SDK builds https://DOMAIN/api/v2 from its domain option; the fetch it is given sends the
// same request over http (the broker listens on loopback without TLS). maxRetries is 0, so
// every answer is seen as the broker gave it.
//
// Steps (each a named entry of the report): list connections with filters and fields; get
// one; GET → modify → PATCH of the whole object (realms, is_domain_connection, metadata,
// display_name, options.attribute_map and upstream_params); fields / include_fields on get;
// create; list with checkpoint paging (the SDK's Page iterator over take=1); enabled clients
// (get / update); delete, then get → NotFoundError; an unknown query parameter →
// BadRequestError invalid_query_string; a wrong token → UnauthorizedError; clients create
// (the secret answered once), list (defaults, Page iterator, fields), GET → modify → PATCH of
// the whole object, rotateSecret, a list filter the broker does not serve → BadRequestError,
// delete → NotFoundError; logs list with `search` (the SDK's name of q), its offset paging,
// fields, and logs get; a malformed search → BadRequestError.
//
// Prints one JSON line: {"steps": [{name, ok, detail}], "calls": [{method, path, query,
// body_keys}], "failures": [..]}. Exit status 0 even with failures (the Go test reads them);
// 2 when the script itself could not run. Never prints the token or a secret.
import { parseArgs } from 'node:util';

import { Management, ManagementClient, ManagementError } from 'auth0';

const { values: args } = parseArgs({
  options: {
    base: { type: 'string' },
    connection: { type: 'string' },
    client: { type: 'string' },
    issuer: { type: 'string' },
  },
});
const token = process.env.MGMT_TOKEN ?? '';
const upstreamSecret = process.env.UPSTREAM_SECRET ?? '';
if (!args.base || !args.connection || !args.client || !args.issuer || !token || !upstreamSecret) {
  console.error('need --base, --connection, --client, --issuer, MGMT_TOKEN and UPSTREAM_SECRET');
  process.exit(2);
}
const base = new URL(args.base);

const calls = [];
// loopbackFetch records each request (method, path, query, the members of a JSON body) and
// sends it over http to the broker.
const loopbackFetch = async (url, init = {}) => {
  const u = new URL(url);
  let bodyKeys;
  if (typeof init.body === 'string') {
    try {
      const b = JSON.parse(init.body);
      bodyKeys = Array.isArray(b) ? ['[array]'] : Object.keys(b).sort();
    } catch {
      bodyKeys = ['[not json]'];
    }
  }
  calls.push({ method: init.method ?? 'GET', path: u.pathname, query: u.search, body_keys: bodyKeys });
  u.protocol = base.protocol;
  return fetch(u, init);
};

const client = (tok) => new ManagementClient({ domain: base.host, token: tok, fetch: loopbackFetch, maxRetries: 0 });
const mgmt = client(token);

const steps = [];
const failures = [];
function check(step, cond, msg) {
  if (!cond) failures.push(`${step}: ${msg}`);
  return cond;
}
// step runs f, recording its detail; a throw is a failure of that step.
async function step(name, f) {
  const before = failures.length;
  try {
    const detail = await f(name);
    steps.push({ name, ok: failures.length === before, detail });
  } catch (err) {
    failures.push(`${name}: threw ${describe(err)}`);
    steps.push({ name, ok: false });
  }
}
function describe(err) {
  if (err instanceof ManagementError) {
    return `${err.constructor.name} ${err.statusCode} ${JSON.stringify(err.body)}`;
  }
  return String(err?.stack ?? err);
}
// expectError runs f and returns the error it throws, failing the step when it throws none
// or one of another class.
async function expectError(name, cls, f) {
  try {
    await f();
  } catch (err) {
    check(name, err instanceof cls, `threw ${describe(err)}, want ${cls.name}`);
    return err;
  }
  check(name, false, `no error, want ${cls.name}`);
  return undefined;
}
const keys = (o) => Object.keys(o ?? {}).sort().join(',');
// canon orders object members by name (recursively), so that same compares values only.
const canon = (v) => (Array.isArray(v) ? v.map(canon)
  : v && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v);
const same = (a, b) => JSON.stringify(canon(a)) === JSON.stringify(canon(b));

let connID;
let created;

await step('connections.list: strategy and name filters with fields', async (name) => {
  const page = await mgmt.connections.list({ strategy: ['oidc'], name: args.connection, fields: 'id,name,strategy', include_fields: true });
  check(name, page.data.length === 1, `${page.data.length} connections, want 1`);
  const c = page.data[0] ?? {};
  check(name, keys(c) === 'id,name,strategy', `members ${keys(c)}, want id,name,strategy`);
  check(name, c.name === args.connection && /^con_[A-Za-z0-9]{16}$/.test(c.id), `got ${JSON.stringify(c)}`);
  connID = c.id;
  return { id: c.id };
});

let original;
await step('connections.get: the SaaS members with their defaults, no client_secret', async (name) => {
  original = await mgmt.connections.get(connID);
  check(name, original.id === connID && original.strategy === 'oidc', `got ${JSON.stringify(original)}`);
  check(name, same(original.realms, [args.connection]), `realms ${JSON.stringify(original.realms)}`);
  check(name, original.is_domain_connection === false, `is_domain_connection ${original.is_domain_connection}`);
  check(name, original.enabled_clients?.includes(args.client), `enabled_clients ${original.enabled_clients}`);
  check(name, original.options?.issuer === args.issuer && !('client_secret' in original.options), `options ${JSON.stringify(original.options)}`);
  return { members: keys(original) };
});

await step('connections.update: GET → modify → PATCH of the whole object', async (name) => {
  const whole = {
    ...original,
    display_name: 'Corp (SDK)',
    is_domain_connection: true,
    realms: [args.connection, 'corp.example'],
    metadata: { owner: 'sdk', ticket: 'IAM-7' },
    options: {
      ...original.options,
      attribute_map: { mapping_mode: 'basic_profile', attributes: { 'https://example.com/mail': '${context.tokenset.id_token.email}' } },
      upstream_params: { ui_locales: { value: 'en' } },
    },
  };
  const updated = await mgmt.connections.update(connID, whole);
  for (const k of ['id', 'name', 'strategy', 'display_name', 'is_domain_connection', 'realms', 'metadata', 'options', 'enabled_clients']) {
    check(name, same(updated[k], whole[k]), `${k} = ${JSON.stringify(updated[k])}, want ${JSON.stringify(whole[k])}`);
  }
  const patch = calls.findLast((c) => c.method === 'PATCH');
  check(name, ['id', 'name', 'strategy', 'options', 'realms'].every((k) => patch?.body_keys?.includes(k)),
    `the PATCH body had ${patch?.body_keys}, want the whole object`);
  const again = await mgmt.connections.get(connID);
  check(name, same(again, updated), `GET after the PATCH ${JSON.stringify(again)} differs from the PATCH answer`);
  return { body_keys: patch?.body_keys };
});

await step('connections.get: fields with include_fields true and false', async (name) => {
  const only = await mgmt.connections.get(connID, { fields: 'name,metadata,realms', include_fields: true });
  check(name, keys(only) === 'metadata,name,realms', `members ${keys(only)}`);
  check(name, only.metadata?.owner === 'sdk', `metadata ${JSON.stringify(only.metadata)}`);
  const without = await mgmt.connections.get(connID, { fields: 'options,enabled_clients', include_fields: false });
  check(name, !('options' in without) && !('enabled_clients' in without) && without.id === connID, `members ${keys(without)}`);
  return { included: keys(only), excluded_rest: keys(without) };
});

await step('connections.create: a new connection with the SaaS members', async (name) => {
  created = await mgmt.connections.create({
    name: 'sdk-created',
    strategy: 'oidc',
    display_name: 'Created by the SDK',
    realms: ['sdk.example'],
    metadata: { source: 'auth0-node' },
    options: { issuer: args.issuer, client_id: 'broker', client_secret: upstreamSecret, scope: 'openid profile email', type: 'back_channel' },
  });
  check(name, /^con_[A-Za-z0-9]{16}$/.test(created.id) && created.name === 'sdk-created', `got ${JSON.stringify(created)}`);
  check(name, !('client_secret' in (created.options ?? {})), 'the answer carries options.client_secret');
  check(name, same(created.realms, ['sdk.example']) && created.metadata?.source === 'auth0-node', `realms/metadata ${JSON.stringify(created)}`);
  return { id: created.id };
});

await step('connections.list: every page of take=1 through the Page iterator', async (name) => {
  const first = calls.length;
  const names = [];
  const page = await mgmt.connections.list({ take: 1 });
  for await (const c of page) {
    names.push(c.name);
    if (names.length > 50) break; // bounded
  }
  check(name, names.includes(args.connection) && names.includes('sdk-created'), `names ${names}, want ${args.connection} and sdk-created`);
  check(name, !names.some((n, i) => names.indexOf(n) !== i), `a connection came twice: ${names}`);
  const lists = calls.slice(first).filter((c) => c.method === 'GET' && c.path === '/api/v2/connections');
  check(name, lists.length === names.length && lists.slice(1).every((c) => c.query.includes('from=')),
    `${lists.length} list requests for ${names.length} connections, the later ones with from=`);
  return { names, requests: lists.map((c) => c.query) };
});

await step('connections.clients: get, update, get', async (name) => {
  const before = await mgmt.connections.clients.get(created.id);
  check(name, before.data.length === 0, `clients before ${JSON.stringify(before.data)}, want none`);
  await mgmt.connections.clients.update(created.id, [{ client_id: args.client, status: true }]);
  const after = await mgmt.connections.clients.get(created.id);
  check(name, same(after.data, [{ client_id: args.client }]), `clients after ${JSON.stringify(after.data)}`);
  const conn = await mgmt.connections.get(created.id, { fields: 'enabled_clients' });
  check(name, same(conn.enabled_clients, [args.client]), `enabled_clients ${JSON.stringify(conn.enabled_clients)}`);
  return { clients: after.data };
});

await step('connections.delete, then get: NotFoundError inexistent_connection', async (name) => {
  await mgmt.connections.delete(created.id);
  const err = await expectError(name, Management.NotFoundError, () => mgmt.connections.get(created.id));
  check(name, err?.statusCode === 404 && err?.body?.errorCode === 'inexistent_connection', `error ${describe(err)}`);
  return { status: err?.statusCode };
});

await step('an unknown query parameter: BadRequestError invalid_query_string', async (name) => {
  const err = await expectError(name, Management.BadRequestError,
    () => mgmt.connections.list({ strategy: ['oidc'] }, { queryParams: { stratgy: 'okta' } }));
  check(name, err?.body?.errorCode === 'invalid_query_string' && /stratgy/.test(err?.body?.message), `error ${describe(err)}`);
  return { message: err?.body?.message };
});

await step('a wrong token: UnauthorizedError', async (name) => {
  const err = await expectError(name, Management.UnauthorizedError, () => client('x'.repeat(48)).connections.get(connID));
  check(name, err?.statusCode === 401, `error ${describe(err)}`);
  return { status: err?.statusCode };
});

let app;
let appSecret;
await step('clients.create: client_id and client_secret generated, the secret answered once', async (name) => {
  app = await mgmt.clients.create({
    name: 'SDK app',
    callbacks: ['http://127.0.0.1:9/sdk-cb'],
    token_endpoint_auth_method: 'client_secret_post',
    connections: [args.connection],
  });
  appSecret = app.client_secret;
  check(name, typeof app.client_id === 'string' && app.client_id.length > 0 && app.name === 'SDK app', `got ${keys(app)}`);
  check(name, typeof appSecret === 'string' && appSecret.length >= 32, 'no generated client_secret in the answer');
  return { client_id: app.client_id };
});

await step('clients.list: the SDK defaults (include_totals), the Page iterator (per_page=1), fields', async (name) => {
  const first = await mgmt.clients.list();
  const ids = first.data.map((c) => c.client_id);
  check(name, ids.includes(args.client) && ids.includes(app.client_id), `clients ${ids}`);
  check(name, first.data.every((c) => !('client_secret' in c)), 'a listed client carries client_secret');
  const paged = [];
  for await (const c of await mgmt.clients.list({ per_page: 1 })) {
    paged.push(c.client_id);
    if (paged.length > 50) break; // bounded
  }
  check(name, same([...paged].sort(), [...ids].sort()), `paged ${paged}, want ${ids}`);
  const only = await mgmt.clients.list({ fields: 'client_id,name', include_fields: true });
  check(name, only.data.length === ids.length && only.data.every((c) => keys(c) === 'client_id,name'), `fields: ${JSON.stringify(only.data)}`);
  return { clients: ids.length };
});

await step('clients.update: GET → modify → PATCH of the whole object', async (name) => {
  const got = await mgmt.clients.get(app.client_id);
  check(name, !('client_secret' in got), 'GET carries client_secret');
  const whole = { ...got, name: 'SDK app (edited)', allowed_origins: ['http://127.0.0.1:9'], callbacks: [...got.callbacks, 'http://127.0.0.1:9/sdk-cb2'] };
  const updated = await mgmt.clients.update(app.client_id, whole);
  for (const k of Object.keys(whole)) {
    check(name, same(updated[k], whole[k]), `${k} = ${JSON.stringify(updated[k])}, want ${JSON.stringify(whole[k])}`);
  }
  const patch = calls.findLast((c) => c.method === 'PATCH');
  check(name, patch?.body_keys?.includes('client_id'), `the PATCH body had ${patch?.body_keys}, want the whole object`);
  const only = await mgmt.clients.get(app.client_id, { fields: 'name,callbacks', include_fields: true });
  check(name, keys(only) === 'callbacks,name' && only.name === 'SDK app (edited)', `fields: ${JSON.stringify(only)}`);
  const conn = await mgmt.connections.clients.get(connID);
  check(name, conn.data.some((c) => c.client_id === app.client_id), `the connection's clients ${JSON.stringify(conn.data)} lack the new app`);
  return { body_keys: patch?.body_keys };
});

await step('clients.rotateSecret: a new secret, answered once', async (name) => {
  const rotated = await mgmt.clients.rotateSecret(app.client_id);
  check(name, typeof rotated.client_secret === 'string' && rotated.client_secret !== appSecret, 'no new client_secret');
  const again = await mgmt.clients.get(app.client_id);
  check(name, !('client_secret' in again), 'GET after the rotation carries client_secret');
  return {};
});

await step('clients.list with a parameter the broker does not serve (app_type): BadRequestError', async (name) => {
  const err = await expectError(name, Management.BadRequestError, () => mgmt.clients.list({ app_type: ['spa'] }));
  check(name, err?.body?.errorCode === 'invalid_query_string' && /app_type/.test(err?.body?.message), `error ${describe(err)}`);
  return { message: err?.body?.message };
});

await step('clients.delete, then get: NotFoundError', async (name) => {
  await mgmt.clients.delete(app.client_id);
  const err = await expectError(name, Management.NotFoundError, () => mgmt.clients.get(app.client_id));
  check(name, err?.statusCode === 404, `error ${describe(err)}`);
  return { errorCode: err?.body?.errorCode };
});

let sapiCount = 0;
await step('logs.list: search filters (type:sapi), with the SDK defaults (include_totals)', async (name) => {
  const page = await mgmt.logs.list({ search: 'type:sapi', per_page: 100 });
  const types = [...new Set(page.data.map((e) => e.type))];
  check(name, page.data.length >= 4 && same(types, ['sapi']), `${page.data.length} events of types ${types}, want ≥ 4 sapi only`);
  const req = calls.findLast((c) => c.path === '/api/v2/logs');
  check(name, new URLSearchParams(req?.query).get('search') === 'type:sapi', `the SDK sent ${req?.query}, want search=type:sapi`);
  const paths = page.data.map((e) => `${e.details?.request?.method} ${e.details?.request?.path}`);
  for (const want of [`PATCH /api/v2/connections/${connID}`, 'POST /api/v2/connections', `DELETE /api/v2/connections/${created.id}`,
    `PATCH /api/v2/connections/${created.id}/clients`, 'POST /api/v2/clients', `PATCH /api/v2/clients/${app.client_id}`,
    `POST /api/v2/clients/${app.client_id}/rotate-secret`, `DELETE /api/v2/clients/${app.client_id}`]) {
    check(name, paths.includes(want), `no sapi event for ${want} in ${paths}`);
  }
  sapiCount = page.data.length;
  return { count: page.data.length, query: req?.query };
});

await step('logs.list: offset paging through the Page iterator (per_page=1)', async (name) => {
  const ids = [];
  const page = await mgmt.logs.list({ search: 'type:sapi', per_page: 1 });
  for await (const e of page) {
    ids.push(e.log_id);
    if (ids.length > 100) break; // bounded
  }
  check(name, ids.length === sapiCount && new Set(ids).size === ids.length, `${ids.length} events (${new Set(ids).size} distinct), want ${sapiCount}`);
  return { count: ids.length };
});

let loginID;
await step('logs.list: search type:s with fields, then logs.get', async (name) => {
  const page = await mgmt.logs.list({ search: `type:s AND connection:${args.connection}`, fields: 'log_id,type,connection', include_fields: true });
  check(name, page.data.length >= 1, 'no s event');
  check(name, page.data.every((e) => keys(e) === 'connection,log_id,type' && e.type === 's'), `events ${JSON.stringify(page.data)}`);
  loginID = page.data[0]?.log_id;
  const ev = await mgmt.logs.get(loginID);
  check(name, ev.log_id === loginID && ev.type === 's' && ev.connection === args.connection && ev.details, `event ${JSON.stringify(ev).slice(0, 500)}`);
  return { log_id: loginID };
});

await step('logs.list: a search the broker cannot parse is BadRequestError', async (name) => {
  const err = await expectError(name, Management.BadRequestError, () => mgmt.logs.list({ search: 'type:(s' }));
  check(name, err?.body?.errorCode === 'invalid_query_string', `error ${describe(err)}`);
  return { message: err?.body?.message };
});

// No answer after the ones that made it may carry a generated client secret.
check('secrets', !appSecret || !JSON.stringify(steps).includes(appSecret), 'a step detail carries the generated client secret');
console.log(JSON.stringify({ steps, calls, failures }));
