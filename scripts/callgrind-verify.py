#!/usr/bin/env python3
"""Instructions per verification of a `keyledger` binary, counted by callgrind.

    scripts/callgrind-verify.py BINARY OUT_PREFIX [--mode json|forward] [--keys-with CONTROL]

Throughput on the shared 2-core machine moves with whatever else runs; instruction counts do
not (two runs of one binary agree within 0.5 %), so this is how a change to the verify path,
or the cost of a control on keys that do not use it, is compared between two builds
(docs/benchmarks.md). It starts `BINARY serve` under `valgrind --tool=callgrind` on a fresh
data dir, creates 200 keys (CONTROL: `sources`, `credits` or `ratelimits` gives each key that
control, set so that it never refuses), warms up with 800 verifications, zeroes the counters,
runs 4,000 verifications from 16 keep-alive clients, waits for the projector, dumps, and
prints one JSON line: every thread of the server counted, divided by 4,000.
Needs valgrind (`apt-get install valgrind`); a release build with line tables
(`cargo build --release -p keyledger`) gives readable profiles in OUT_PREFIX.callgrind.out.1.
"""
import argparse, glob, http.client, json, os, re, socket, subprocess, sys, tempfile, threading, time

CLIENTS, WARMUP, COUNTED, KEYS = 16, 800, 4000, 200

args = argparse.ArgumentParser()
args.add_argument('binary')
args.add_argument('prefix')
args.add_argument('--mode', choices=['json', 'forward'], default='json')
args.add_argument('--keys-with', choices=['sources', 'credits', 'ratelimits'])
args = args.parse_args()
args.binary = os.path.abspath(args.binary)

data = os.path.join(tempfile.mkdtemp(), 'data')
init = subprocess.run([args.binary, 'init', '--data-dir', data], capture_output=True, text=True, check=True)
admin = json.loads(init.stdout)['admin_key']
probe = socket.socket(); probe.bind(('127.0.0.1', 0)); port = probe.getsockname()[1]; probe.close()
out = f'{args.prefix}.callgrind.out'
for old in glob.glob(out + '*'):
    os.remove(old)
server = subprocess.Popen(
    ['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}',
     args.binary, 'serve', '--data-dir', data, '--listen', f'127.0.0.1:{port}'],
    stdout=subprocess.DEVNULL, stderr=open(f'{args.prefix}.server.log', 'w'))


def call(conn, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        headers['content-type'] = 'application/json'
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    answer = conn.getresponse()
    return answer.status, answer.read()


deadline = time.time() + 120
while True:
    try:
        if call(http.client.HTTPConnection('127.0.0.1', port, timeout=30), 'GET', '/healthz')[0] == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit('the server did not start')
    time.sleep(0.5)

conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
secrets = []
for i in range(KEYS):
    body = {'name': f'cg-{i}', 'scopes': ['read', 'write'], 'owner': 'callgrind'}
    if args.keys_with == 'sources':
        body['allowed_sources'] = ['127.0.0.0/8', '10.0.0.0/8']
    elif args.keys_with == 'credits':
        body['credits'] = {'remaining': 10**12}
    elif args.keys_with == 'ratelimits':
        body['ratelimits'] = [{'name': 'api', 'limit': 10**9, 'duration': '1h'}]
    status, answer = call(conn, 'POST', '/v1/workspaces/cg/keys', body, {'authorization': f'Bearer {admin}'})
    if status != 201:
        sys.exit(f'create answered {status}: {answer[:300]!r}')
    secrets.append(json.loads(answer)['secret'])


def verify(conn, k):
    secret = secrets[k % KEYS]
    if args.mode == 'json':
        body = {'key': secret, 'scopes': ['read'],
                'context': {'ip': f'10.1.{k // 250 % 250}.{k % 250 + 1}', 'user_agent': 'callgrind/1',
                            'method': 'GET', 'path': '/v1/orders', 'request_id': f'gw-{k}'}}
        status, answer = call(conn, 'POST', '/v1/verify', body)
    else:
        status, answer = call(conn, 'GET', '/v1/verify?scope=read', None,
                              {'authorization': f'Bearer {secret}', 'x-forwarded-method': 'GET',
                               'x-forwarded-uri': '/v1/orders', 'x-request-id': f'gw-{k}'})
    if status != 200:
        raise SystemExit(f'verify answered {status}: {answer[:300]!r}')


def run(total):
    def client(first):
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
        for k in range(first, first + total // CLIENTS):
            verify(conn, k)
    threads = [threading.Thread(target=client, args=(t * 1_000_000,)) for t in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


run(WARMUP)
time.sleep(1.5)
subprocess.run(['callgrind_control', '-z', str(server.pid)], capture_output=True, check=True)
run(COUNTED)
time.sleep(1.5)  # the projector folds the last batch
subprocess.run(['callgrind_control', '-d', str(server.pid)], capture_output=True, check=True)
time.sleep(2)
server.terminate()
server.wait(timeout=120)
dump = f'{out}.1'
total = max(int(m.group(2)) for line in open(dump, errors='replace')
            if (m := re.match(r'^(summary|totals): (\d+)', line)))
print(json.dumps({'binary': args.binary, 'mode': args.mode, 'keys_with': args.keys_with, 'dump': dump,
                  'instructions': total, 'per_verification': round(total / COUNTED)}))
