// app.js: the interop SPA. Auth0's own auth0-spa-js with useDpop logs in through the broker
// (authorization code + PKCE, dpop_jkt, DPoP proof at /oauth/token) and calls a DPoP-protected API
// with createFetcher().fetchWithAuth (proof with ath and the API's nonce, one retry on
// use_dpop_nonce). Settings come from /config.json written by the test: {domain, clientId,
// audience, scope, apis: [{name, url}], silentCheck}. Results are shown in #user, #token, #api
// ({name: {status, body}}), #silent (the prompt=none answer before login, with silentCheck);
// failures in #error.
// Tokens are never shown: only their type, cnf.jkt and audience.
import { Auth0Client } from '/vendor/auth0-spa-js.production.esm.js';

const $ = (id) => document.getElementById(id);
const show = (id, v) => { $(id).textContent = typeof v === 'string' ? v : JSON.stringify(v, null, 2); };
const fail = (step, err) => {
  show('status', `failed: ${step}`);
  show('error', `${step}: ${err?.error ?? err?.name ?? 'Error'}: ${err?.error_description ?? err?.message ?? String(err)}`);
};

function jwtPayload(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    return undefined;
  }
}

let step = 'load /config.json';
try {
  const cfg = await (await fetch('/config.json', { cache: 'no-store' })).json();
  const redirectUri = `${location.origin}/`;
  step = 'new Auth0Client';
  // new Auth0Client (not createAuth0Client): no checkSession / prompt=none iframe on load.
  const auth0 = new Auth0Client({
    domain: cfg.domain, // "http://127.0.0.1:PORT": iss expected "http://127.0.0.1:PORT/" (issuer unset)
    clientId: cfg.clientId,
    useDpop: true,
    cacheLocation: 'memory',
    useFormData: false, // JSON body at /oauth/token, as the broker accepts it (2.27 defaults to a form)
    authorizationParams: { redirect_uri: redirectUri, audience: cfg.audience, scope: cfg.scope ?? 'openid profile email' },
  });

  const params = new URLSearchParams(location.search);
  if (params.has('error')) {
    throw Object.assign(new Error(params.get('error_description') ?? ''), { error: params.get('error') });
  }
  if (params.has('code') && params.has('state')) {
    step = 'handleRedirectCallback';
    show('status', 'completing login…');
    await auth0.handleRedirectCallback();
    history.replaceState({}, document.title, location.pathname);

    show('silent', JSON.parse(sessionStorage.getItem('silent') ?? 'null') ?? '');

    step = 'getUser';
    show('user', await auth0.getUser());

    step = 'getTokenSilently (cache)';
    const tok = await auth0.getTokenSilently({ detailedResponse: true });
    const at = jwtPayload(tok.access_token);
    show('token', { token_type: tok.token_type, cnf_jkt: at?.cnf?.jkt, aud: at?.aud, scope: tok.scope });

    const results = {};
    for (const api of cfg.apis ?? []) {
      step = `fetchWithAuth ${api.name} ${api.url}`;
      show('status', `calling ${api.name}…`);
      // One fetcher (and so one nonce slot) per resource server: RS nonces are kept apart
      // (RFC 9449 §9; docs/conformance.md#dpop-client-nonce-per-server).
      const fetcher = auth0.createFetcher({ dpopNonceId: `api-${api.name}` });
      // authParams.audience is passed on purpose: without it spa-js 2.27's fetcher asks
      // getTokenSilently for audience undefined (it overrides the client default), misses the
      // cache and tries a prompt=none iframe (response_mode web_message).
      const res = await fetcher.fetchWithAuth(api.url, { method: 'GET' }, { audience: cfg.audience });
      const text = await res.text();
      let body;
      try { body = JSON.parse(text); } catch { body = text; }
      results[api.name] = { status: res.status, body };
      show('api', results);
    }
    const bad = Object.entries(results).filter(([, r]) => r.status !== 200).map(([n, r]) => `${n} ${r.status}`);
    show('status', bad.length === 0 ? 'done' : `API answered ${bad.join(', ')}`);
  } else {
    if (cfg.silentCheck) {
      // Silent authentication before any login: spa-js opens a prompt=none,
      // response_mode=web_message iframe at the broker, which must post login_required back
      // (a redirect would leave spa-js waiting for its timeout).
      step = 'getTokenSilently (prompt=none, no session)';
      show('status', 'silent check…');
      let silent;
      try {
        // 60 s only bounds the wait: the broker posts login_required at once.
        await auth0.getTokenSilently({ cacheMode: 'off', timeoutInSeconds: 60 });
        silent = { error: 'unexpected: a token without a login' };
      } catch (err) {
        silent = { error: err?.error ?? err?.name ?? 'Error', error_description: err?.error_description ?? err?.message };
      }
      sessionStorage.setItem('silent', JSON.stringify(silent));
      show('silent', silent);
    }
    $('login').hidden = false;
    $('login').onclick = () => {
      step = 'loginWithRedirect';
      auth0.loginWithRedirect().catch((err) => fail(step, err));
    };
    show('status', 'ready');
  }
} catch (err) {
  fail(step, err);
}
