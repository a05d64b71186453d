// grace dashboard: reads the status snapshots grace streams on /events (one
// a second), draws them, and switches the mode and the kill switches through
// the admin routes. Plain script, no framework, nothing loaded from elsewhere.
//
// Every request carries the admin token, when this grace asks for one, as
// `Authorization: Bearer ...`; the token is kept in this tab's
// sessionStorage. The stream is read with fetch rather than EventSource,
// which cannot send that header. Everything shown comes from grace and is
// written with textContent, never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'grace.adminToken';
  const OUTCOMES = ['fresh', 'stale', 'degraded', 'queued', 'unavailable', 'rejected'];
  const COLOURS = {
    fresh: '#1f9d55',
    stale: '#e0a100',
    degraded: '#8e5bd0',
    queued: '#2f7fd3',
    unavailable: '#d1343a',
    rejected: '#7b8194',
  };
  const MODES = ['normal', 'degraded', 'critical', 'auto'];
  const WINDOW_MS = 60000;
  const TRANSITIONS_SHOWN = 5;
  // No event for this long: the stream is taken for dead and opened again.
  const SILENCE_MS = 5000;
  const RECONNECT_MS = 1000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // ---- the admin token ----------------------------------------------------

  let tokenWaiters = [];

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (token()) headers.Authorization = 'Bearer ' + token();
    return headers;
  }

  // Shows the token form and resolves once a token is given. Called on a
  // 401: if a token was sent, grace refused it, so it is forgotten.
  function askForToken() {
    const refused = token() !== '';
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-hint').textContent = refused
      ? 'grace refused that token; try again'
      : 'this grace asks for its admin token';
    $('token-form').hidden = false;
    $('token-input').focus();
    setConnection('waiting', 'token needed');
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const given = $('token-input').value.trim();
    if (!given) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    $('token-input').value = '';
    $('token-form').hidden = true;
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((resolve) => resolve());
    restartStream();
  });
  $('token-change').addEventListener('click', () => {
    $('token-form').hidden = !$('token-form').hidden;
    if (!$('token-form').hidden) $('token-input').focus();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $('token-form').hidden = true;
    restartStream();
  });

  // ---- the stream ---------------------------------------------------------

  let streamAbort = null;
  let lastEventAt = 0;

  function setConnection(state, text) {
    const node = $('connection');
    node.dataset.connection = state;
    node.textContent = text;
  }

  function restartStream() {
    if (streamAbort) streamAbort.abort();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function readStream() {
    for (;;) {
      streamAbort = new AbortController();
      try {
        const response = await fetch('/events', {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          cache: 'no-store',
          signal: streamAbort.signal,
        });
        if (response.status === 401) {
          await askForToken();
          continue;
        }
        if (!response.ok || !response.body) throw new Error('GET /events: HTTP ' + response.status);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        lastEventAt = performance.now();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block
              .split('\n')
              .filter((line) => line.startsWith('data:'))
              .map((line) => line.slice(5).replace(/^ /, ''))
              .join('\n');
            if (data) {
              lastEventAt = performance.now();
              setConnection('live', 'live');
              record(JSON.parse(data));
            }
          }
        }
      } catch (err) {
        // Network gone, grace restarting, or the stream aborted: try again.
      }
      setConnection('lost', 'reconnecting');
      await sleep(RECONNECT_MS);
    }
  }

  setInterval(() => {
    if (lastEventAt && performance.now() - lastEventAt > SILENCE_MS) {
      lastEventAt = 0;
      setConnection('lost', 'no news; reconnecting');
      restartStream();
    }
  }, 1000);

  // ---- the admin routes ---------------------------------------------------

  let errorTimer = null;

  function showError(text) {
    const node = $('error');
    node.textContent = text;
    node.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { node.hidden = true; }, 8000);
  }

  // Sends one change; the answer is the status as it now stands.
  async function change(method, path, body) {
    for (;;) {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers: authHeaders({ 'Content-Type': 'application/json' }),
          body: JSON.stringify(body),
          cache: 'no-store',
        });
      } catch (err) {
        showError(method + ' ' + path + ': grace did not answer (' + err.message + ')');
        return;
      }
      if (response.status === 401) {
        await askForToken();
        continue;
      }
      const answer = await response.json().catch(() => null);
      if (!response.ok) {
        const detail = answer && answer.detail ? answer.detail : 'HTTP ' + response.status;
        showError(method + ' ' + path + ': ' + detail);
        return;
      }
      $('error').hidden = true;
      render(answer);
      return;
    }
  }

  // ---- requests per second, from successive cumulative counters -----------

  let history = []; // [{t: uptime_ms, rates: {outcome: per second}}]
  let previous = null;

  function record(status) {
    if (previous && status.uptime_ms > previous.uptime_ms) {
      const seconds = (status.uptime_ms - previous.uptime_ms) / 1000;
      const rates = {};
      for (const outcome of OUTCOMES) {
        const delta = (status.requests[outcome] || 0) - (previous.requests[outcome] || 0);
        rates[outcome] = Math.max(0, delta) / seconds;
      }
      history.push({ t: status.uptime_ms, rates });
    } else if (previous && status.uptime_ms < previous.uptime_ms) {
      history = []; // grace restarted: its counters did too
    }
    previous = status;
    history = history.filter((point) => point.t >= status.uptime_ms - WINDOW_MS);
    render(status);
  }

  // ---- drawing ------------------------------------------------------------

  function render(status) {
    renderHeader(status);
    renderOutcomes(status);
    drawChart();
    renderServices(status.services || []);
    renderMode(status);
    renderCacheAndQueue(status);
  }

  function renderHeader(status) {
    const badge = $('mode-badge');
    badge.dataset.mode = status.mode;
    badge.textContent = status.mode + (status.auto ? ' (auto)' : '');
    $('uptime').textContent = 'up ' + duration(status.uptime_ms);
  }

  function renderOutcomes(status) {
    const body = $('outcomes').tBodies[0];
    const latest = history.length ? history[history.length - 1].rates : {};
    for (const outcome of OUTCOMES) {
      let row = body.querySelector('tr[data-outcome="' + outcome + '"]');
      if (!row) {
        row = el('tr');
        row.dataset.outcome = outcome;
        const name = el('td');
        const swatch = el('span', 'swatch');
        swatch.style.background = COLOURS[outcome];
        name.append(swatch, outcome);
        row.append(name, el('td', 'rate'), el('td', 'total'));
        body.append(row);
      }
      row.querySelector('.rate').textContent = rate(latest[outcome] || 0);
      row.querySelector('.total').textContent = count(status.requests[outcome] || 0);
    }
  }

  function drawChart() {
    const canvas = $('chart');
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 48;
    const right = 16; // room for half of the "now" label
    const top = 8;
    const bottom = 22;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const newest = history.length ? history[history.length - 1].t : 0;
    const totals = history.map((point) => OUTCOMES.reduce((sum, o) => sum + point.rates[o], 0));
    const yMax = niceCeiling(Math.max(1, ...totals));
    const x = (t) => left + plotWidth * (1 - (newest - t) / WINDOW_MS);
    const y = (value) => top + plotHeight * (1 - value / yMax);

    ctx.font = '11px system-ui, "DejaVu Sans", sans-serif';
    ctx.fillStyle = '#687087';
    ctx.strokeStyle = '#e6e9f0';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const value = (yMax * i) / 4;
      const yy = Math.round(y(value)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(width - right, yy);
      ctx.stroke();
      ctx.fillText(rate(value), left - 6, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const secondsAgo of [60, 45, 30, 15, 0]) {
      const label = secondsAgo === 0 ? 'now' : '-' + secondsAgo + ' s';
      ctx.fillText(label, left + plotWidth * (1 - secondsAgo / 60), height - bottom + 6);
    }
    if (history.length < 2) {
      ctx.fillText('collecting…', left + plotWidth / 2, top + plotHeight / 2);
      return;
    }
    // Stacked areas, fresh at the bottom.
    let below = history.map(() => 0);
    for (const outcome of OUTCOMES) {
      const above = history.map((point, i) => below[i] + point.rates[outcome]);
      if (above.some((value, i) => value > below[i])) {
        ctx.beginPath();
        history.forEach((point, i) => {
          if (i === 0) ctx.moveTo(x(point.t), y(above[i]));
          else ctx.lineTo(x(point.t), y(above[i]));
        });
        for (let i = history.length - 1; i >= 0; i--) ctx.lineTo(x(history[i].t), y(below[i]));
        ctx.closePath();
        ctx.globalAlpha = 0.85;
        ctx.fillStyle = COLOURS[outcome];
        ctx.fill();
        ctx.globalAlpha = 1;
      }
      below = above;
    }
  }

  window.addEventListener('resize', drawChart);

  const serviceCards = new Map();

  function serviceCard(name) {
    let card = serviceCards.get(name);
    if (card) return card;
    const root = el('article', 'service');
    root.dataset.service = name;
    const header = el('header');
    const state = el('span', 'state');
    const probe = el('span', 'probe');
    header.append(el('h3', '', name), state, probe);
    const figures = el('dl', 'figures');
    const field = (label) => {
      const value = el('dd');
      figures.append(el('dt', '', label), value);
      return value;
    };
    const fields = {
      opened: field('times opened'),
      p50: field('p50'),
      failing: field('failures in a row'),
      p99: field('p99'),
      calls: field('calls'),
      failures: field('failed'),
      shortCircuited: field('short-circuited'),
      timeouts: field('timed out'),
    };
    const transitions = el('ol', 'transitions');
    root.append(header, figures, transitions);
    card = { root, state, probe, fields, transitions };
    serviceCards.set(name, card);
    $('services').append(root);
    return card;
  }

  function renderServices(services) {
    for (const service of services) {
      const card = serviceCard(service.name);
      card.root.dataset.state = service.state;
      card.state.textContent = service.state.replace('_', '-');
      card.probe.textContent =
        service.state === 'open' && service.half_open_in_ms !== undefined
          ? 'probe in ' + duration(service.half_open_in_ms)
          : '';
      const f = card.fields;
      f.opened.textContent = count(service.times_opened);
      f.failing.textContent = count(service.consecutive_failures);
      f.p50.textContent = millis(service.latency_p50_ms);
      f.p99.textContent = millis(service.latency_p99_ms);
      f.calls.textContent = count(service.calls);
      f.failures.textContent = count(service.failures);
      f.timeouts.textContent = count(service.timeouts);
      f.shortCircuited.textContent = count(service.short_circuited);
      const shown = (service.transitions || []).slice(-TRANSITIONS_SHOWN).reverse();
      const items = shown.map((transition) => {
        const item = el('li');
        item.append(
          el('span', 'edge', transition.from.replace('_', '-') + ' → ' + transition.to.replace('_', '-')),
          el('span', 'ago', ago(transition.ago_ms)),
          el('div', 'reason', transition.reason),
        );
        return item;
      });
      if (!items.length) items.push(el('li', 'none', 'no transitions yet'));
      card.transitions.replaceChildren(...items);
    }
  }

  const modeButtons = new Map();
  const featureRows = new Map();

  function renderMode(status) {
    $('mode-now').textContent = status.mode;
    $('mode-detail').textContent = status.auto
      ? 'auto: follows the CPU' + (status.cpu_usage !== undefined ? ' (now ' + Math.round(status.cpu_usage) + ' %)' : '')
      : 'set by an operator';
    const chosen = status.auto ? 'auto' : status.mode;
    for (const mode of MODES) {
      let button = modeButtons.get(mode);
      if (!button) {
        button = el('button', '', mode);
        button.type = 'button';
        button.dataset.mode = mode;
        button.addEventListener('click', async () => {
          button.disabled = true;
          await change('PUT', '/mode', { mode });
          button.disabled = false;
        });
        modeButtons.set(mode, button);
        $('mode-buttons').append(button);
      }
      button.setAttribute('aria-pressed', String(mode === chosen));
    }
    const killed = new Set(status.killed_features || []);
    const disabled = new Set(status.disabled_features || []);
    for (const feature of status.features || []) {
      let row = featureRows.get(feature);
      if (!row) {
        const item = el('li');
        item.dataset.feature = feature;
        const toggle = el('input', 'switch');
        toggle.type = 'checkbox';
        toggle.dataset.feature = feature;
        toggle.setAttribute('aria-label', 'serve ' + feature);
        toggle.addEventListener('change', async () => {
          toggle.disabled = true;
          const path = '/features/' + encodeURIComponent(feature);
          await change('PUT', path, { enabled: toggle.checked });
          toggle.disabled = false;
        });
        const why = el('span', 'why');
        item.append(el('span', 'name', feature), why, toggle);
        $('features').append(item);
        row = { item, toggle, why };
        featureRows.set(feature, row);
      }
      const isKilled = killed.has(feature);
      const serving = !disabled.has(feature);
      row.item.dataset.enabled = String(serving);
      row.item.dataset.killed = String(isKilled);
      if (!row.toggle.disabled) row.toggle.checked = !isKilled;
      row.why.textContent = isKilled
        ? 'killed by an operator'
        : serving ? 'serving' : 'off in ' + status.mode + ' mode';
    }
  }

  function renderCacheAndQueue(status) {
    const cache = status.cache || {};
    $('cache-entries').textContent = count(cache.entries);
    $('cache-capacity').textContent = count(cache.capacity);
    $('cache-fallbacks').textContent = count(cache.fallbacks_served);
    const queue = status.queue || {};
    $('queue-depth').textContent = count(queue.depth);
    $('queue-processed').textContent = count(queue.processed);
    $('queue-dead-letters').textContent = count(queue.dead_letters);
    $('queue-journal').textContent = queue.durable
      ? 'durable' + (queue.journal ? ' (' + queue.journal + ')' : '')
      : 'not durable' + (queue.degraded_reason ? ': ' + queue.degraded_reason : '');
  }

  // ---- formatting ---------------------------------------------------------

  function count(n) {
    return n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US');
  }

  function rate(perSecond) {
    if (perSecond >= 100) return Math.round(perSecond).toLocaleString('en-US');
    if (perSecond >= 10) return perSecond.toFixed(1);
    return perSecond.toFixed(perSecond === 0 ? 0 : 2);
  }

  function millis(ms) {
    if (ms === undefined || ms === null) return '–';
    return ms >= 100 ? Math.round(ms) + ' ms' : ms.toFixed(ms >= 10 ? 1 : 2) + ' ms';
  }

  function duration(ms) {
    const seconds = ms / 1000;
    if (seconds < 10) return seconds.toFixed(1) + ' s';
    if (seconds < 120) return Math.round(seconds) + ' s';
    if (seconds < 7200) return Math.round(seconds / 60) + ' min';
    return Math.round(seconds / 3600) + ' h';
  }

  function ago(ms) {
    return ms < 1000 ? 'just now' : duration(ms) + ' ago';
  }

  function niceCeiling(value) {
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  drawChart();
  readStream();
})();
