// sso.js: the single sign-on page (sso.html). Auth0's auth0-spa-js with useDpop, set up the way an
// app is: on load it calls checkSession() (as createAuth0Client does), which asks the broker with
// prompt=none in a hidden iframe (response_mode=web_message) when this app logged in before, and
// then shows #state {client_id, authenticated, user, token}. Buttons: #login
// (loginWithRedirect), #silent (getTokenSilently with the cache off: always asks the broker;
// the answer goes to #silent-result {ok, token} or {error}), #logout (logout: the broker's
// /v2/logout with returnTo this page). Settings come from /config.json: {domain, clientId,
// audience, scope}. #status reads "ready" when the page is settled, "failed: …" on an error.
// Tokens are never shown: only their type, cnf.jkt and audience.
import { Auth0Client } from '/vendor/auth0-spa-js.production.esm.js';

const $ = (id) => document.getElementById(id);
const show = (id, v) => { $(id).textContent = typeof v === 'string' ? v : JSON.stringify(v, null, 2); };
const failed = (step, err) => {
  show('status', `failed: ${step}`);
  show('error', `${step}: ${err?.error ?? err?.name ?? 'Error'}: ${err?.error_description ?? err?.message ?? String(err)}`);
};

function tokenFacts(tok) {
  try {
    const b64 = tok.access_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const at = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return { token_type: tok.token_type, cnf_jkt: at?.cnf?.jkt, aud: at?.aud };
  } catch {
    return { token_type: tok?.token_type };
  }
}

let step = 'load /config.json';
try {
  const cfg = await (await fetch('/config.json', { cache: 'no-store' })).json();
  document.title = `${cfg.clientId}: ${document.title}`;
  show('title', `${cfg.clientId} on ${location.origin}: auth0-spa-js single sign-on`);
  const home = `${location.origin}/sso.html`;
  step = 'new Auth0Client';
  const auth0 = new Auth0Client({
    domain: cfg.domain,
    clientId: cfg.clientId,
    useDpop: true,
    cacheLocation: 'memory', // a reload forgets the tokens: only the broker's session can bring them back
    useFormData: false,
    authorizationParams: { redirect_uri: home, audience: cfg.audience, scope: cfg.scope ?? 'openid profile email' },
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
  } else {
    step = 'checkSession';
    show('status', 'checking the session…');
    await auth0.checkSession({ timeoutInSeconds: 60 }); // 60 s bounds the wait; the broker answers at once
  }

  step = 'isAuthenticated';
  const authenticated = await auth0.isAuthenticated();
  const state = { client_id: cfg.clientId, authenticated };
  if (authenticated) {
    const user = await auth0.getUser();
    state.user = { sub: user?.sub, email: user?.email };
    step = 'getTokenSilently (cache)';
    state.token = tokenFacts(await auth0.getTokenSilently({ detailedResponse: true }));
  }
  show('state', state);

  $('login').onclick = () => {
    step = 'loginWithRedirect';
    show('status', 'redirecting…');
    auth0.loginWithRedirect().catch((err) => failed(step, err));
  };
  $('silent').onclick = async () => {
    show('silent-result', '');
    show('status', 'asking silently…');
    try {
      const tok = await auth0.getTokenSilently({ cacheMode: 'off', detailedResponse: true, timeoutInSeconds: 60 });
      show('silent-result', { ok: true, token: tokenFacts(tok) });
    } catch (err) {
      show('silent-result', { error: err?.error ?? err?.name ?? 'Error', error_description: err?.error_description ?? err?.message });
    }
    show('status', 'ready');
  };
  $('logout').onclick = () => {
    step = 'logout';
    show('status', 'redirecting…');
    auth0.logout({ logoutParams: { returnTo: home } }).catch((err) => failed(step, err));
  };
  for (const id of ['login', 'silent', 'logout']) $(id).hidden = false;
  show('status', 'ready');
} catch (err) {
  failed(step, err);
}
