// The outside-client suite of `fhirload serve` (issue 19): fhir-kit-client
// from npm, unmodified and pinned by package-lock.json, drives a server
// this suite starts, across every interaction the server offers.
//
//   cd fhirstore/clienttest && npm ci && npm test
//
// FHIRLOAD_BIN names the fhirload binary; without it the suite builds one
// with `go build` (about 10 s on a warm cache). The server runs with
// --auth none on a free loopback port in a temporary data directory.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'fhir-kit-client';

const here = dirname(fileURLToPath(import.meta.url));
const APP = 'https://app.example';
let server, dir, base, client;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fhirload-clienttest-'));
  let bin = process.env.FHIRLOAD_BIN;
  if (!bin) {
    bin = join(dir, 'fhirload');
    execFileSync('go', ['build', '-o', bin, './cmd/fhirload'], { cwd: resolve(here, '..', '..'), stdio: 'inherit' });
  }
  server = spawn(bin, ['serve', '--auth', 'none', '--addr', '127.0.0.1:0', '--data', join(dir, 'data'), '--cors-origin', APP],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  base = await new Promise((ok, fail) => {
    let err = '';
    const timer = setTimeout(() => fail(new Error('serve did not start within 30 s: ' + err)), 30000);
    server.stderr.on('data', (b) => {
      err += b;
      const m = /listening on (\S+\/r4\/)/.exec(err);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    server.on('exit', (code) => { clearTimeout(timer); fail(new Error(`serve exited ${code}: ${err}`)); });
    server.on('error', (e) => { clearTimeout(timer); fail(new Error(`cannot start ${bin}: ${e.message}`)); });
  });
  client = new Client({ baseUrl: base });
});

after(() => {
  if (server) server.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// status returns the HTTP status of a rejected client call.
async function status(promise) {
  try {
    await promise;
  } catch (e) {
    if (e.response) return e.response.status;
    throw e;
  }
  return 200;
}

const headersOf = (res) => Client.httpFor(res).response.headers;
const ids = (bundle) => (bundle.entry || []).map((e) => `${e.resource.resourceType}/${e.resource.id}`);
const matches = (bundle) => (bundle.entry || []).filter((e) => e.search?.mode === 'match').map((e) => `${e.resource.resourceType}/${e.resource.id}`);
const included = (bundle) => (bundle.entry || []).filter((e) => e.search?.mode === 'include').map((e) => `${e.resource.resourceType}/${e.resource.id}`).sort();

const patient = (id, mrn, family = 'Doe') => ({
  resourceType: 'Patient', ...(id ? { id } : {}),
  identifier: [{ system: 'urn:test:mrn', value: mrn }],
  name: [{ family, given: ['Jo'] }], gender: 'female', managingOrganization: { reference: 'Organization/org1' },
});
const observation = (id, subject, code, date, value, status = 'final') => ({
  resourceType: 'Observation', id, status,
  code: { coding: [{ system: 'http://loinc.org', code }], text: code === '8867-4' ? 'Heart rate' : 'Body weight' },
  subject: { reference: `Patient/${subject}` }, effectiveDateTime: date,
  valueQuantity: { value, system: 'http://unitsofmeasure.org', code: 'kg' },
});

test('metadata: a truthful CapabilityStatement', async () => {
  const cs = await client.capabilityStatement();
  assert.equal(cs.resourceType, 'CapabilityStatement');
  assert.ok(cs.software?.name, 'software');
  assert.ok(cs.implementation?.url, 'implementation');
  const types = cs.rest[0].resource.map((r) => r.type);
  assert.ok(types.includes('Encounter') && types.includes('DocumentReference') && types.length > 140, `types: ${types.length}`);
  assert.ok(!JSON.stringify(cs.rest[0].security || {}).includes('SigV4'), 'no SigV4 under --auth none');
  const obs = cs.rest[0].resource.find((r) => r.type === 'Observation');
  const codes = obs.interaction.map((i) => i.code);
  for (const c of ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type']) {
    assert.ok(codes.includes(c), c);
  }
  assert.ok(obs.searchParam.some((p) => p.name === 'value-quantity'));
});

test('seed the world (PUT, transaction)', async () => {
  await client.update({ resourceType: 'Organization', id: 'org1', body: { resourceType: 'Organization', id: 'org1', name: 'General' } });
  await client.update({ resourceType: 'Practitioner', id: 'dr1', body: { resourceType: 'Practitioner', id: 'dr1', name: [{ family: 'Who' }] } });
  const tx = await client.transaction({
    body: {
      resourceType: 'Bundle', type: 'transaction', entry: [
        { resource: patient('pa', 'MRN-A', 'Alpha'), request: { method: 'PUT', url: 'Patient/pa' } },
        { resource: patient('pb', 'MRN-B', 'Beta'), request: { method: 'PUT', url: 'Patient/pb' } },
        { resource: { resourceType: 'Encounter', id: 'en1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/pa' } }, request: { method: 'PUT', url: 'Encounter/en1' } },
        { resource: { ...observation('o1', 'pa', '29463-7', '2020-01-01', 70), encounter: { reference: 'Encounter/en1' }, performer: [{ reference: 'Practitioner/dr1' }] }, request: { method: 'PUT', url: 'Observation/o1' } },
        { resource: observation('o2', 'pa', '29463-7', '2021-06-01', 72.5), request: { method: 'PUT', url: 'Observation/o2' } },
        { resource: observation('o3', 'pa', '8867-4', '2019-11-20', 60, 'amended'), request: { method: 'PUT', url: 'Observation/o3' } },
        { resource: observation('o4', 'pb', '29463-7', '2015-05-05', 90), request: { method: 'PUT', url: 'Observation/o4' } },
        { resource: observation('o5', 'pb', '8867-4', '2021-06-01', 80, 'preliminary'), request: { method: 'PUT', url: 'Observation/o5' } },
      ],
    },
  });
  assert.equal(tx.type, 'transaction-response');
  assert.ok(tx.entry.every((e) => e.response.status.startsWith('201')));
});

test('create, read, vread, update, delete; 410 after delete', async () => {
  const created = await client.create({ resourceType: 'Patient', body: patient(null, 'MRN-C') });
  assert.ok(created.id);
  assert.equal(headersOf(created).get('etag'), 'W/"1"');
  const read = await client.read({ resourceType: 'Patient', id: created.id });
  assert.equal(read.identifier[0].value, 'MRN-C');
  const updated = await client.update({ resourceType: 'Patient', id: created.id, body: { ...read, gender: 'other' } });
  assert.equal(updated.meta.versionId, '2');
  const v1 = await client.vread({ resourceType: 'Patient', id: created.id, version: '1' });
  assert.equal(v1.gender, 'female');
  await client.delete({ resourceType: 'Patient', id: created.id });
  assert.equal(await status(client.read({ resourceType: 'Patient', id: created.id })), 410);
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'nobody' })), 404);
});

test('seed profile: a Patient without name.family is refused, naming the element', async () => {
  try {
    await client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ given: ['X'] }] } });
    assert.fail('created');
  } catch (e) {
    assert.ok([400, 422].includes(e.response?.status), String(e.response?.status));
    assert.match(JSON.stringify(e.response.data), /family/);
  }
});

test('conditional create: If-None-Exist, twice, makes one resource', async () => {
  const opts = { headers: { 'If-None-Exist': 'identifier=urn:test:mrn|MRN-D' } };
  const a = await client.create({ resourceType: 'Patient', body: patient(null, 'MRN-D'), options: opts });
  const b = await client.create({ resourceType: 'Patient', body: patient(null, 'MRN-D'), options: opts });
  assert.equal(a.id, b.id);
  const found = await client.search({ resourceType: 'Patient', searchParams: { identifier: 'urn:test:mrn|MRN-D' } });
  assert.equal(found.total, 1);
});

test('conditional create in a transaction (request.ifNoneExist), twice', async () => {
  const body = {
    resourceType: 'Bundle', type: 'transaction', entry: [{
      fullUrl: 'urn:uuid:0f6f1c3e-5d0b-4b7e-8c43-1b0c5d7d9e01', resource: patient(null, 'MRN-E'),
      request: { method: 'POST', url: 'Patient', ifNoneExist: 'identifier=urn:test:mrn|MRN-E' },
    }],
  };
  const first = await client.transaction({ body });
  const second = await client.transaction({ body });
  assert.match(first.entry[0].response.status, /^201/);
  assert.match(second.entry[0].response.status, /^200/);
  const found = await client.search({ resourceType: 'Patient', searchParams: { identifier: 'urn:test:mrn|MRN-E' } });
  assert.equal(found.total, 1);
});

test('conditional update: PUT Patient?identifier=…', async () => {
  const created = await client.update({ resourceType: 'Patient', searchParams: { identifier: 'urn:test:mrn|MRN-F' }, body: patient(null, 'MRN-F') });
  const again = await client.update({ resourceType: 'Patient', searchParams: { identifier: 'urn:test:mrn|MRN-F' }, body: { ...patient(null, 'MRN-F'), gender: 'male' } });
  assert.equal(again.id, created.id);
  assert.equal(again.meta.versionId, '2');
  assert.equal(await status(client.update({ resourceType: 'Patient', searchParams: { family: 'Doe' }, body: patient(null, 'MRN-G') })), 412);
});

test('conditional read: If-None-Match → 304, If-Modified-Since', async () => {
  const pa = await client.read({ resourceType: 'Patient', id: 'pa' });
  const etag = headersOf(pa).get('etag');
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'pa', options: { headers: { 'If-None-Match': etag } } })), 304);
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'pa', options: { headers: { 'If-None-Match': 'W/"99"' } } })), 200);
  const later = new Date(Date.now() + 3600e3).toUTCString();
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'pa', options: { headers: { 'If-Modified-Since': later } } })), 304);
});

test('JSON Patch: applies, test op fails with 422, If-Match versioning', async () => {
  const patched = await client.patch({ resourceType: 'Observation', id: 'o2', jsonPatch: [{ op: 'replace', path: '/status', value: 'amended' }] });
  assert.equal(patched.status, 'amended');
  assert.equal(patched.meta.versionId, '2');
  assert.equal(await status(client.patch({ resourceType: 'Observation', id: 'o2', jsonPatch: [{ op: 'test', path: '/status', value: 'final' }] })), 422);
  assert.equal(await status(client.patch({ resourceType: 'Observation', id: 'o2', jsonPatch: [{ op: 'replace', path: '/status', value: 'final' }], options: { headers: { 'If-Match': 'W/"1"' } } })), 412);
  const back = await client.patch({ resourceType: 'Observation', id: 'o2', jsonPatch: [{ op: 'replace', path: '/status', value: 'final' }], options: { headers: { 'If-Match': 'W/"2"' } } });
  assert.equal(back.meta.versionId, '3');
});

test('405 carries Allow', async () => {
  const res = await fetch(base + 'Patient/pa', { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: '{}' });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get('allow'), 'GET, PUT, PATCH, DELETE');
});

test('DELETE honours If-Match', async () => {
  await client.update({ resourceType: 'Patient', id: 'pdel', body: patient('pdel', 'MRN-H') });
  await client.update({ resourceType: 'Patient', id: 'pdel', body: patient('pdel', 'MRN-H') });
  assert.equal(await status(client.delete({ resourceType: 'Patient', id: 'pdel', options: { headers: { 'If-Match': 'W/"1"' } } })), 412);
  await client.delete({ resourceType: 'Patient', id: 'pdel', options: { headers: { 'If-Match': 'W/"2"' } } });
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'pdel' })), 410);
});

test('search: _sort on several keys, descending', async () => {
  const b = await client.search({ resourceType: 'Observation', searchParams: { _sort: '-date,_id' } });
  assert.deepEqual(ids(b), ['Observation/o2', 'Observation/o5', 'Observation/o1', 'Observation/o3', 'Observation/o4']);
  const c = await client.search({ resourceType: 'Observation', searchParams: { _sort: 'code,-value-quantity' } });
  assert.deepEqual(ids(c), ['Observation/o4', 'Observation/o2', 'Observation/o1', 'Observation/o5', 'Observation/o3']);
});

test('search: _include, _revinclude, :iterate', async () => {
  const a = await client.search({ resourceType: 'Observation', searchParams: { subject: 'Patient/pa', _include: 'Observation:subject', _sort: 'date' } });
  assert.deepEqual(matches(a), ['Observation/o3', 'Observation/o1', 'Observation/o2']);
  assert.deepEqual(included(a), ['Patient/pa']);
  const b = await client.search({ resourceType: 'Observation', searchParams: { _id: 'o4', _include: 'Observation:subject', '_include:iterate': 'Patient:organization' } });
  assert.deepEqual(included(b), ['Organization/org1', 'Patient/pb']);
  const c = await client.search({ resourceType: 'Patient', searchParams: { _id: 'pb', _revinclude: 'Observation:subject' } });
  assert.deepEqual(included(c), ['Observation/o4', 'Observation/o5']);
});

test('search: _total, _summary, _elements', async () => {
  const none = await client.search({ resourceType: 'Observation', searchParams: { _total: 'none' } });
  assert.equal(none.total, undefined);
  const acc = await client.search({ resourceType: 'Observation', searchParams: { _total: 'accurate' } });
  assert.equal(acc.total, 5);
  const count = await client.search({ resourceType: 'Observation', searchParams: { _summary: 'count', status: 'final' } });
  assert.equal(count.total, 3);
  assert.equal(count.entry, undefined);
  const sum = await client.search({ resourceType: 'Patient', searchParams: { _id: 'pa', _summary: 'true' } });
  assert.ok(sum.entry[0].resource.meta.tag.some((t) => t.code === 'SUBSETTED'));
  const el = await client.search({ resourceType: 'Observation', searchParams: { _id: 'o1', _elements: 'subject' } });
  assert.ok(el.entry[0].resource.subject && !el.entry[0].resource.valueQuantity);
});

test('search: Observation status, value-quantity, encounter, code:text, :missing, :not', async () => {
  const q = async (p) => ids(await client.search({ resourceType: 'Observation', searchParams: p })).sort();
  assert.deepEqual(await q({ status: 'preliminary' }), ['Observation/o5']);
  assert.deepEqual(await q({ 'status:not': 'final', _id: 'o3,o4,o5' }), ['Observation/o3', 'Observation/o5']);
  assert.deepEqual(await q({ 'value-quantity': 'gt75|http://unitsofmeasure.org|kg' }), ['Observation/o4', 'Observation/o5']);
  assert.deepEqual(await q({ encounter: 'Encounter/en1' }), ['Observation/o1']);
  assert.deepEqual(await q({ 'code:text': 'heart' }), ['Observation/o3', 'Observation/o5']);
  assert.deepEqual(await q({ 'performer:missing': 'false' }), ['Observation/o1']);
  assert.deepEqual(await q({ 'date': 'ap2020-01-01' }), ['Observation/o1', 'Observation/o3']);
});

test('search: chains, _has, _tag', async () => {
  const chain = await client.search({ resourceType: 'Observation', searchParams: { 'subject:Patient.family': 'Beta' } });
  assert.deepEqual(ids(chain).sort(), ['Observation/o4', 'Observation/o5']);
  const has = await client.search({ resourceType: 'Patient', searchParams: { '_has:Observation:subject:status': 'preliminary' } });
  assert.deepEqual(ids(has), ['Patient/pb']);
  await client.update({ resourceType: 'Practitioner', id: 'dr2', body: { resourceType: 'Practitioner', id: 'dr2', meta: { tag: [{ system: 'urn:t', code: 'vip' }] } } });
  const tag = await client.search({ resourceType: 'Practitioner', searchParams: { _tag: 'urn:t|vip' } });
  assert.deepEqual(ids(tag), ['Practitioner/dr2']);
});

test('paging: nextPage and prevPage', async () => {
  const p1 = await client.search({ resourceType: 'Observation', searchParams: { _count: 2 } });
  const p2 = await client.nextPage({ bundle: p1 });
  const p3 = await client.nextPage({ bundle: p2 });
  assert.equal(client.nextPage({ bundle: p3 }), undefined);
  const all = [...ids(p1), ...ids(p2), ...ids(p3)];
  assert.equal(new Set(all).size, 5);
  const back = await client.prevPage({ bundle: p2 });
  assert.deepEqual(ids(back), ids(p1));
});

test('history: instance, type and system, POST says POST', async () => {
  const created = await client.create({ resourceType: 'Practitioner', body: { resourceType: 'Practitioner', name: [{ family: 'New' }] } });
  await client.update({ resourceType: 'Practitioner', id: created.id, body: { ...created, active: true } });
  const inst = await client.history({ resourceType: 'Practitioner', id: created.id });
  assert.equal(inst.type, 'history');
  assert.deepEqual(inst.entry.map((e) => e.request.method), ['PUT', 'POST']);
  assert.equal(inst.entry[1].request.url, 'Practitioner');
  const type = await client.typeHistory({ resourceType: 'Practitioner' });
  assert.equal(type.total, 4, String(type.total)); // dr1, dr2, and the two versions of the new one
  const sys = await client.systemHistory({ options: {} });
  assert.ok(sys.total > type.total);
  const since = await client.request(`Practitioner/_history?_since=${encodeURIComponent(created.meta.lastUpdated)}&_count=1`);
  assert.equal(since.total, 2);
  assert.equal(since.entry.length, 1);
  const next = await client.nextPage({ bundle: since });
  assert.equal(next.entry.length, 1);
  const at = await client.request(`Practitioner/${created.id}/_history?_at=${encodeURIComponent(created.meta.lastUpdated)}`);
  assert.ok(at.total >= 1);
});

test('system search, compartment search, $everything', async () => {
  const sys = await client.systemSearch({ searchParams: { _type: 'Patient,Organization', _id: 'pa,org1' } });
  assert.deepEqual(ids(sys).sort(), ['Organization/org1', 'Patient/pa']);
  const comp = await client.compartmentSearch({ resourceType: 'Observation', compartment: { resourceType: 'Patient', id: 'pa' } });
  assert.deepEqual(ids(comp).sort(), ['Observation/o1', 'Observation/o2', 'Observation/o3']);
  const every = await client.operation({ name: '$everything', resourceType: 'Patient', id: 'pa', method: 'GET' });
  const got = ids(every).sort();
  for (const want of ['Patient/pa', 'Encounter/en1', 'Observation/o1', 'Observation/o2', 'Observation/o3', 'Organization/org1', 'Practitioner/dr1']) {
    assert.ok(got.includes(want), want);
  }
  assert.ok(!got.includes('Observation/o4'));
  const all = await client.operation({ name: '$everything', resourceType: 'Patient', method: 'GET' });
  assert.ok(ids(all).includes('Observation/o4'));
});

test('Prefer: handling strict refuses, lenient reports; return minimal and OperationOutcome', async () => {
  assert.equal(await status(client.search({ resourceType: 'Patient', searchParams: { 'shoe-size': 44 }, options: { headers: { Prefer: 'handling=strict' } } })), 400);
  const lenient = await client.search({ resourceType: 'Patient', searchParams: { 'shoe-size': 44, _id: 'pa' }, options: { headers: { Prefer: 'handling=lenient' } } });
  assert.equal(lenient.total, 1);
  const oo = lenient.entry.find((e) => e.resource.resourceType === 'OperationOutcome');
  assert.ok(oo && JSON.stringify(oo.resource).includes('shoe-size'));
  const minimal = await client.create({ resourceType: 'Organization', body: { resourceType: 'Organization', name: 'M' }, options: { headers: { Prefer: 'return=minimal' } } });
  assert.equal(minimal.resourceType, undefined);
  assert.match(headersOf(minimal).get('location'), /Organization\/[^/]+\/_history\/1$/);
  const out = await client.create({ resourceType: 'Organization', body: { resourceType: 'Organization', name: 'O' }, options: { headers: { Prefer: 'return=OperationOutcome' } } });
  assert.equal(out.resourceType, 'OperationOutcome');
});

test('XML is 406, JSON otherwise', async () => {
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'pa', options: { headers: { Accept: 'application/fhir+xml' } } })), 406);
  assert.equal(await status(client.request('Patient/pa?_format=xml')), 406);
  const ok = await client.read({ resourceType: 'Patient', id: 'pa', options: { headers: { Accept: 'application/fhir+json' } } });
  assert.equal(ok.id, 'pa');
});

test('CORS: preflight and actual request from an allowed origin', async () => {
  const pre = await fetch(base + 'Patient/pa', { method: 'OPTIONS', headers: { Origin: APP, 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'content-type' } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), APP);
  assert.match(pre.headers.get('access-control-allow-methods'), /PUT/);
  const other = await fetch(base + 'Patient/pa', { method: 'OPTIONS', headers: { Origin: 'https://evil.example', 'Access-Control-Request-Method': 'GET' } });
  assert.equal(other.status, 403);
  const get = await fetch(base + 'Patient/pa', { headers: { Origin: APP } });
  assert.equal(get.headers.get('access-control-allow-origin'), APP);
  assert.match(get.headers.get('access-control-expose-headers'), /ETag/);
});

test('batch and transaction rules: a transaction touching a resource twice is 400, nothing written', async () => {
  assert.equal(await status(client.transaction({
    body: {
      resourceType: 'Bundle', type: 'transaction', entry: [
        { resource: patient('twice', 'MRN-T'), request: { method: 'PUT', url: 'Patient/twice' } },
        { request: { method: 'DELETE', url: 'Patient/twice' } },
      ],
    },
  })), 400);
  assert.equal(await status(client.read({ resourceType: 'Patient', id: 'twice' })), 404);
  const batch = await client.batch({
    body: {
      resourceType: 'Bundle', type: 'batch', entry: [
        { request: { method: 'GET', url: 'Patient/pa' } },
        { request: { method: 'GET', url: 'Patient/nobody' } },
        { request: { method: 'GET', url: 'Observation?subject=pa&_summary=count' } },
      ],
    },
  });
  assert.deepEqual(batch.entry.map((e) => e.response.status.slice(0, 3)), ['200', '404', '200']);
  assert.equal(batch.entry[2].resource.total, 3);
});
