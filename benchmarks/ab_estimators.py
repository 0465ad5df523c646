"""docs/ab-estimators.md, the whole page: the A/B decision rules compared on the H200 recordings.

Choose a decision rule for the paired A/B performance gate from the H200 recordings.

Data: $PROBE_DIR, the folder of the H200 probe recordings (*.json; see its README).
Run from the repository root: python -m benchmarks.ab_estimators [--quick]
Everything is done on the "goodness" scale g = log(x) for decode/e2e (higher is better)
and g = -log(ttft) (lower ttft is better).  Per pair, d = g_base - g_head > 0 means head worse.
"Worse by tol" means head/base < 1 - tol (throughput) or head/base > 1 + tol (ttft).

Usage: see main(); run the parts one at a time (each is seconds to ~1 min of CPU).
"""
import json
import os
import sys
import time

import numpy as np
from scipy import stats

D = os.environ.get("PROBE_DIR", "").rstrip("/") + "/"  # the folder of the probe recordings
METRICS = ("decode", "e2e", "ttft")
RNG = np.random.default_rng(20261127)
QUICK = "--quick" in sys.argv
B = 600 if QUICK else 1500          # inner bootstrap resamples per job
R = 60 if QUICK else 200            # outer jobs per (scenario, N) for the iid-pair scheme
NS = (10, 15, 20, 25, 30, 40)
TOLS = (0.0, 0.02, 0.03, 0.05)
ALPHAS = (0.05, 0.05 / 6)           # one-sided; 0.05/6 = Bonferroni share for 3 metrics x 2 cases
ESTS = ("t", "wil", "mw", "pb-med", "pb-q75", "pb-q90", "pb-hd90", "pb-sf")
SF_Q = np.arange(0.1, 0.91, 0.1)  # quantiles for the shift-function estimator


def tol_log(metric, tol):
    if isinstance(tol, dict):
        tol = tol[metric]
    return np.log1p(tol) if metric == "ttft" else -np.log1p(-tol)


# ----------------------------------------------------------------------------- data
def load():
    """scenario name -> (kind 'aa'|'ab', {metric: (g_base[P], g_head[P])})."""
    out = {}

    def g(metric, x):
        x = np.asarray(x, float)
        return -np.log(x) if metric == "ttft" else np.log(x)

    for size, tag in (("448x448", "448"), ("1024x1024", "1024")):
        d = json.load(open(D + f"twoproc-{size}.json"))
        for ph in ("aa", "ab"):
            P = d[ph]
            out[f"2p-{tag}-{ph}"] = (ph, {m: (g(m, [p["0"][m] for p in P]), g(m, [p["1"][m] for p in P]))
                                         for m in METRICS})
    for f, ph in (("paired-0.json", "aa"), ("paired-mlp_0.1.json", "ab")):
        P = json.load(open(D + f))
        out[f"1p-448-{ph}"] = (ph, {m: (g(m, [p["A"][m] for p in P]), g(m, [p["B"][m] for p in P]))
                                    for m in METRICS})
    it = json.load(open(D + "itl-0_mlp0.1_none.json"))

    def rounds(rs):
        r = {"decode": [], "ttft": [], "e2e": []}
        for x in rs:
            s = x["stamps"]
            r["decode"].append((len(s) - 1) / (s[-1] - s[0]))
            r["ttft"].append(s[0] - x["t0"])
            r["e2e"].append(len(s) / (x["end"] - x["t0"]))
        return r

    a, b, a2 = rounds(it["0"]), rounds(it["mlp:0.1"]), rounds(it["none"])
    out["itl-aa(A,A')"] = ("aa", {m: (g(m, a[m]), g(m, a2[m])) for m in METRICS})
    out["itl-ab(A,B)"] = ("ab", {m: (g(m, a[m]), g(m, b[m])) for m in METRICS})
    # synthetic: A/A recordings with head decode and e2e made exactly 5% slower (ttft unchanged)
    for tag in ("448", "1024"):
        _, mm = out[f"2p-{tag}-aa"]
        out[f"syn-{tag}-aa-5%"] = ("ab", {m: (mm[m][0], mm[m][1] + (np.log(0.95) if m != "ttft" else 0.0))
                                          for m in METRICS})
    return out


# ----------------------------------------------------------------------------- estimators
_SR = {}


def signrank_k(n, alpha):
    """largest k with P(T+ <= k-1) <= alpha (exact null of the signed-rank statistic)."""
    key = (n, alpha)
    if key not in _SR:
        c = np.zeros(n * (n + 1) // 2 + 1)
        c[0] = 1.0
        for i in range(1, n + 1):
            c[i:] = c[i:] + c[:-i].copy()
        cdf = np.cumsum(c) / c.sum()
        # P(T <= k-1) = cdf[k-1]
        k = int(np.searchsorted(cdf, alpha, side="right"))  # number of cdf entries <= alpha
        _SR[key] = k
    return _SR[key]


def est_all(gb, gh, idx, alphas=ALPHAS, which=ESTS):
    """Return {est: (point, {alpha: (lo, hi)})} of 'worse by' (log) for one metric of one job."""
    n = len(gb)
    d = gb - gh
    res = {}
    if len(which) == 1 and which[0].startswith("pb-"):
        pass
    else:
        res.update(_rank_ests(gb, gh, d, n, alphas))
    _boot_ests(res, gb, gh, idx, n, alphas, [e for e in which if e.startswith("pb-")])
    return res


def _rank_ests(gb, gh, d, n, alphas):
    res = {}
    # paired t on the mean log ratio
    m, se = d.mean(), d.std(ddof=1) / np.sqrt(n)
    res["t"] = (m, {a: (m - stats.t.ppf(1 - a, n - 1) * se, m + stats.t.ppf(1 - a, n - 1) * se) for a in alphas})
    # Wilcoxon signed rank: Hodges-Lehmann point + Walsh-average interval (lo > 0 <=> one-sided reject)
    iu = np.triu_indices(n)
    w = np.sort((d[:, None] + d[None, :])[iu] / 2.0)
    ci = {}
    for a in alphas:
        k = signrank_k(n, a)
        ci[a] = (w[k - 1], w[len(w) - k]) if k >= 1 else (-np.inf, np.inf)
    res["wil"] = (np.median(w), ci)
    # Mann-Whitney (unpaired): point = ratio of per-side medians, interval = two-sample HL (normal approx)
    diff = np.sort((gb[:, None] - gh[None, :]).ravel())
    ci = {}
    for a in alphas:
        k = int(np.floor(n * n / 2 - stats.norm.ppf(1 - a) * np.sqrt(n * n * (2 * n + 1) / 12.0)))
        ci[a] = (diff[k - 1], diff[len(diff) - k]) if k >= 1 else (-np.inf, np.inf)
    res["mw"] = (np.median(gb) - np.median(gh), ci)
    return res


def _boot_ests(res, gb, gh, idx, n, alphas, which):
    """paired bootstrap (resample pairs) of the difference of per-side quantiles"""
    if not which:
        return
    sb, sh = np.sort(gb[idx], axis=1), np.sort(gh[idx], axis=1)
    for name, q in (("pb-med", 0.5), ("pb-q75", 0.75), ("pb-q90", 0.9)):
        if name not in which:
            continue
        pt = np.quantile(gb, q) - np.quantile(gh, q)
        pos = q * (n - 1)
        lo_i, fr = int(np.floor(pos)), pos - np.floor(pos)
        hi_i = min(lo_i + 1, n - 1)
        bs = (sb[:, lo_i] * (1 - fr) + sb[:, hi_i] * fr) - (sh[:, lo_i] * (1 - fr) + sh[:, hi_i] * fr)
        res[name] = (pt, {a: (np.quantile(bs, a), np.quantile(bs, 1 - a)) for a in alphas})
    if "pb-hd90" in which:
        # Harrell-Davis 90th percentile (smooth weighted order statistics) -> less lumpy at small n
        w = hd_weights(n, 0.9)
        pt = np.sort(gb) @ w - np.sort(gh) @ w
        bs = sb @ w - sh @ w
        res["pb-hd90"] = (pt, {a: (np.quantile(bs, a), np.quantile(bs, 1 - a)) for a in alphas})
    if "pb-sf" in which:
        # shift function: median over deciles 10..90 of the per-side quantile differences
        pt = np.median(np.quantile(gb, SF_Q) - np.quantile(gh, SF_Q))
        bs = np.median(np.quantile(sb, SF_Q, axis=1) - np.quantile(sh, SF_Q, axis=1), axis=0)
        res["pb-sf"] = (pt, {a: (np.quantile(bs, a), np.quantile(bs, 1 - a)) for a in alphas})


_HD = {}


def hd_weights(n, q):
    if (n, q) not in _HD:
        a, b = (n + 1) * q, (n + 1) * (1 - q)
        _HD[(n, q)] = np.diff(stats.beta.cdf(np.arange(n + 1) / n, a, b))
    return _HD[(n, q)]


def job_estimates(mm, sel, which=ESTS):
    """Estimates for every metric on pairs `sel` (index array)."""
    n = len(sel)
    idx = RNG.integers(0, n, size=(B, n))
    return {m: est_all(mm[m][0][sel], mm[m][1][sel], idx, which=which) for m in METRICS}


def flags(ests, tol, alpha, rule):
    """metric -> bool regression flag. rule 'R1': lo>0 and point>tol; 'R2': lo>tol."""
    out = {}
    for m, (pt, ci) in ests.items():
        tl = tol_log(m, tol)
        lo = ci[alpha][0]
        out[m] = (lo > 0 and pt > tl) if rule == "R1" else (lo > tl)
    return out


# ----------------------------------------------------------------------------- jobs
def jobs_fixed(kind, mm, n, scheme):
    """list of (sel, swap) ; swap=True exchanges base and head (used for A/A orientation), or a
    per-pair bool mask (scheme 'subswap': exact exchangeability null for A/A).
    schemes: 'boot' iid pairs with replacement; 'win' contiguous windows (both orientations for A/A);
    'sub' N distinct pairs without replacement (random orientation for A/A); 'subswap' like 'sub'
    plus a random side swap inside every pair (A/A only; removes the recording's own side offset)."""
    P = len(mm["decode"][0])
    if scheme in ("sub", "subswap"):
        if n > P or (scheme == "subswap" and kind != "aa"):
            return []
        reps = 1 if n == P and scheme == "sub" and kind == "ab" else R
        out = []
        for _ in range(reps):
            sel = RNG.choice(P, n, replace=False)
            sw = (RNG.random(n) < 0.5) if scheme == "subswap" else bool(kind == "aa" and RNG.random() < 0.5)
            out.append((sel, sw))
        return out
    if scheme == "win":
        if n > P:
            return []
        js = [(np.arange(s, s + n), False) for s in range(P - n + 1)]
        if kind == "aa":
            js += [(sel, True) for sel, _ in js]
        return js
    return [(RNG.integers(0, P, n), bool(kind == "aa" and RNG.random() < 0.5)) for _ in range(R)]


def swapped(mm, swap, sel=None):
    if isinstance(swap, np.ndarray):  # per-pair mask aligned with sel
        out = {}
        for m, (b, h) in mm.items():
            b2, h2 = b.copy(), h.copy()
            b2[sel], h2[sel] = np.where(swap, h[sel], b[sel]), np.where(swap, b[sel], h[sel])
            out[m] = (b2, h2)
        return out
    return {m: (v[1], v[0]) for m, v in mm.items()} if swap else mm


def run_fixed(data, scen_names, schemes=("boot", "win")):
    """rates[(scen, scheme, n, est, tol, alpha, rule)] = (frac flagged: decode, e2e, ttft, any metric; njobs)"""
    rates = {}
    for sc in scen_names:
        kind, mm = data[sc]
        for scheme in schemes:
            for n in NS:
                js = jobs_fixed(kind, mm, n, scheme)
                if not js:
                    continue
                acc = {}
                for sel, sw in js:
                    e = job_estimates(swapped(mm, sw, sel), sel)
                    for est in ESTS:
                        sub = {m: e[m][est] for m in METRICS}
                        for tol in TOLS:
                            for a in ALPHAS:
                                for rule in ("R1", "R2"):
                                    f = flags(sub, tol, a, rule)
                                    k = (sc, scheme, n, est, tol, a, rule)
                                    c = acc.setdefault(k, [0, 0, 0, 0])
                                    c[0] += f["decode"]
                                    c[1] += f["e2e"]
                                    c[2] += f["ttft"]
                                    c[3] += any(f.values())
                for k, c in acc.items():
                    rates[k] = tuple(x / len(js) for x in c) + (len(js),)
    return rates


def run_sequential(data, scen_names, est, tol, alpha, nmin, nmax, step=5, margin=0.0, reps=R, swap_null=False):
    """Sequential gate on random orders of the recorded pairs (without replacement; nmax capped at P).
    After nmin, nmin+step, ... pairs: any metric lo > tol -> FAIL (stop); all metrics hi < tol+margin ->
    PASS (stop); at nmax: rule R1.  A/A: random orientation per job, or (swap_null) a random side swap
    inside every pair.  tol: float or {metric: tol}.  Returns {scen: (fail rate, mean pairs, early-stop rate)}."""
    out = {}
    for sc in scen_names:
        kind, mm0 = data[sc]
        P = len(mm0["decode"][0])
        nmx = min(nmax, P)
        fails, used, early = 0, 0, 0
        for _ in range(reps):
            seq = RNG.permutation(P)[:nmx]
            if kind == "aa" and swap_null:
                mm = swapped(mm0, RNG.random(nmx) < 0.5, seq)
            else:
                mm = swapped(mm0, kind == "aa" and RNG.random() < 0.5)
            n = min(nmin, nmx)
            while True:
                e = job_estimates(mm, seq[:n], which=(est,))
                sub = {m: e[m][est] for m in METRICS}
                lo = {m: sub[m][1][alpha][0] for m in METRICS}
                hi = {m: sub[m][1][alpha][1] for m in METRICS}
                if n >= nmx:
                    fails += any(flags(sub, tol, alpha, "R1").values())
                    break
                if any(lo[m] > tol_log(m, tol) for m in METRICS):
                    fails += 1
                    early += 1
                    break
                if all(hi[m] < tol_log(m, tol) + margin for m in METRICS):
                    early += 1
                    break
                n = min(n + step, nmx)
            used += n
        out[sc] = (fails / reps, used / reps, early / reps)
    return out


# ----------------------------------------------------------------------------- noise / power
def noise_table(data):
    rows = []
    for sc, (kind, mm) in data.items():
        if sc.startswith("syn"):
            continue
        row = [sc]
        for m in METRICS:
            d = mm[m][0] - mm[m][1]
            mad = 1.4826 * np.median(np.abs(d - np.median(d)))
            row.append((d.std(ddof=1), mad, d.mean(), np.median(d), len(d)))
        rows.append(row)
    return rows


def eff_sd(mm, metric, est, reps=4000):
    """per-pair-equivalent sd of an estimator: bootstrap sd at the full sample x sqrt(P)."""
    gb, gh = mm[metric]
    P = len(gb)
    idx = RNG.integers(0, P, size=(reps, P))
    a, b = gb[idx], gh[idx]
    if est == "t":
        v = (a - b).mean(1)
    elif est.startswith("pb-"):
        if est == "pb-sf":
            v = np.median(np.quantile(a, SF_Q, axis=1) - np.quantile(b, SF_Q, axis=1), axis=0)
        else:
            q = {"pb-med": .5, "pb-q75": .75, "pb-q90": .9}[est]
            v = np.quantile(a, q, axis=1) - np.quantile(b, q, axis=1)
    return v.std() * np.sqrt(P)


def power_t(sd, delta, n, alpha):
    """one-sided paired t power for shift delta (log) with per-pair sd."""
    df = n - 1
    nc = delta / (sd / np.sqrt(n))
    return 1 - stats.nct.cdf(stats.t.ppf(1 - alpha, df), df, nc)


def n_needed(sd, delta, alpha, power=0.95):
    return int(np.ceil(((stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)) * sd / delta) ** 2))


# ----------------------------------------------------------------------------- main
SCEN = ["2p-448-aa", "2p-1024-aa", "2p-448-ab", "2p-1024-ab", "syn-448-aa-5%", "syn-1024-aa-5%",
        "1p-448-aa", "1p-448-ab", "itl-aa(A,A')", "itl-ab(A,B)"]
RATES = "/tmp/ab_rates.json"


def part_noise(data):
    print("## per-pair sd of log ratios  (sd | 1.4826*MAD | mean | median), worse-by orientation\n")
    for row in noise_table(data):
        print(f"{row[0]:14s} n={row[1][4]:2d} " + "  ".join(
            f"{m}: {s:.3f}|{r:.3f}|{mu:+.3f}|{md:+.3f}" for m, (s, r, mu, md, _) in zip(METRICS, row[1:])))
    print("\n## per-pair-equivalent sd of estimators (bootstrap sd x sqrt(P))\n")
    for sc in ("2p-448-aa", "2p-448-ab", "2p-1024-aa", "2p-1024-ab", "1p-448-aa", "itl-aa(A,A')"):
        mm = data[sc][1]
        print(f"{sc:13s} decode " + " ".join(f"{e}:{eff_sd(mm, 'decode', e):.3f}" for e in ("t", "pb-med", "pb-q75", "pb-q90", "pb-sf")),
              "| e2e t/q90:", f"{eff_sd(mm, 'e2e', 't'):.3f}/{eff_sd(mm, 'e2e', 'pb-q90'):.3f}",
              "| ttft t/q90:", f"{eff_sd(mm, 'ttft', 't'):.3f}/{eff_sd(mm, 'ttft', 'pb-q90'):.3f}")
    print("\n## fast-end estimator pb-q90 (decode): fast-mode share (rounds within 7% of the side's 95th pct),"
          " per-pair-equivalent sd, and normal-approx power of rule R1 (alpha .0083, tol 3%) for a 5% / 5.7% slowdown\n")
    for sc in ("2p-448-aa", "2p-448-ab", "2p-1024-aa", "2p-1024-ab", "1p-448-aa", "1p-448-ab", "itl-aa(A,A')", "itl-ab(A,B)"):
        mm = data[sc][1]
        sh = [np.mean(x >= np.quantile(x, .95) + np.log(0.93)) for x in mm["decode"]]
        sd = eff_sd(mm, "decode", "pb-q90")
        pw = []
        for n in (20, 30, 40):
            se = sd / np.sqrt(n)
            thr = max(stats.norm.ppf(1 - ALPHAS[1]) * se, tol_log("decode", 0.03))
            pw.append("/".join(f"{1 - stats.norm.cdf((thr - dl) / se):.2f}" for dl in (-np.log(0.95), -np.log(0.943))))
        print(f"{sc:13s} fast share base/head {sh[0]:.2f}/{sh[1]:.2f}  sd_eff {sd:.3f}  power N=20,30,40: " + " ".join(pw))

    print("\n## analytic power, one-sided paired t, shift 5% (log 0.0513), alpha .05 / .0083\n")
    for sd in (0.03, 0.05, 0.10, 0.20):
        print(f"sd={sd:.2f}: " + "  ".join(
            f"N={n}: {power_t(sd, 0.0513, n, .05):.2f}/{power_t(sd, 0.0513, n, .05/6):.2f}" for n in NS),
            f"| N for 95% power: {n_needed(sd, .0513, .05)} (a=.05) {n_needed(sd, .0513, .05/6)} (a=.0083)")


def part_fixed(data, scs, schemes=("boot", "win")):
    try:
        old = json.load(open(RATES))
    except FileNotFoundError:
        old = {}
    rates = run_fixed(data, scs, schemes)
    old.update({"|".join(map(str, k)): v for k, v in rates.items()})
    json.dump(old, open(RATES, "w"))


def part_report():
    raw = json.load(open(RATES))
    rates = {}
    for k, v in raw.items():
        sc, scheme, n, est, tol, a, rule = k.split("|")
        if len(v) == 3:  # old format (decode, any, njobs)
            v = (v[0], np.nan, np.nan, v[1], v[2])
        rates[(sc, scheme, int(n), est, float(tol), float(a), rule)] = v

    def row(scheme, est, tol, a, rule, n, scs, col):
        vals = [rates.get((sc, scheme, n, est, tol, a, rule)) for sc in scs]
        return "/".join("  - " if v is None else f"{v[col]:.2f}" for v in vals)

    for a in ALPHAS:
        for rule in ("R1", "R2"):
            print(f"\n## fixed N, alpha={a:.4f}, rule {rule}; AA = any-metric false alarm 448/1024 (twoproc),"
                  f" AB = decode detection 448/1024 (twoproc) ; iid-pair bootstrap jobs\n")
            print("est     tol  | " + " | ".join(f"N={n:<2d} AA      AB       " for n in NS))
            for est in ESTS:
                for tol in TOLS:
                    print(f"{est:7s} {tol:.2f} | " + " | ".join(
                        row("boot", est, tol, a, rule, n, SCEN[:2], 1) + " " +
                        row("boot", est, tol, a, rule, n, SCEN[2:4], 0) for n in NS))
    for a in ALPHAS:
        print(f"\n## secondary (boot), alpha={a:.4f}, R1: AA any-metric 1p,itl ; AB decode 1p,itl,syn448,syn1024\n")
        for tol in TOLS:
            for est in ESTS:
                print(f"{est:7s} {tol:.2f} | " + " | ".join(
                    f"N={n}: " + row("boot", est, tol, a, "R1", n, SCEN[6:10:2], 1) + " " +
                    row("boot", est, tol, a, "R1", n, [SCEN[7], SCEN[9], SCEN[4], SCEN[5]], 0)
                    for n in (15, 20, 30, 40)))
    for a in ALPHAS:
        print(f"\n## contiguous windows (heavily overlapping), alpha={a:.4f} R1: AA any 448/1024 ; AB decode 448/1024\n")
        for tol in TOLS:
            for est in ESTS:
                print(f"{est:7s} {tol:.2f} | " + " | ".join(
                    f"N={n}: " + row("win", est, tol, a, "R1", n, SCEN[:2], 1) + " " +
                    row("win", est, tol, a, "R1", n, SCEN[2:4], 0) for n in NS))


def part_seq(data, est, tols, a, ranges=((10, 30), (15, 40), (20, 40))):
    """tols: 'd,e,t' tolerances for decode,e2e,ttft."""
    tol = dict(zip(METRICS, map(float, tols.split(","))))
    for nmin, nmax in ranges:
        r0 = run_sequential(data, ["2p-448-aa", "2p-1024-aa"], est, tol, a, nmin, nmax, swap_null=True)
        r1 = run_sequential(data, ["2p-448-aa", "2p-1024-aa", "2p-448-ab", "2p-1024-ab"], est, tol, a, nmin, nmax)
        cells = [f"{r0[s][0]:.2f}({r0[s][1]:.0f},{r0[s][2]:.2f})" for s in r0] + \
                [f"{r1[s][0]:.2f}({r1[s][1]:.0f},{r1[s][2]:.2f})" for s in r1]
        print(f"seq {est} tol={tols} a={a:.4f} N={nmin}-{nmax} | AAsw 448,1024: {cells[0]} {cells[1]} | AA 448,1024:"
              f" {cells[2]} {cells[3]} | AB 448,1024: {cells[4]} {cells[5]}", flush=True)


REC = dict(est="pb-q90", tol={"decode": 0.03, "e2e": 0.05, "ttft": 0.05}, alpha=0.05 / 6)


def part_rec(data, scs):
    """Fixed-N rates of the recommended rule (REC, rule R1) under the sub / subswap / win schemes."""
    est, tol, a = REC["est"], REC["tol"], REC["alpha"]
    for sc in scs:
        kind, mm = data[sc]
        cells = []
        for scheme in (("subswap", "sub", "win") if kind == "aa" else ("sub", "win")):
            row = []
            for n in NS:
                js = jobs_fixed(kind, mm, n, scheme)
                if not js:
                    row.append(" -  ")
                    continue
                hit = 0
                for sel, sw in js:
                    e = job_estimates(swapped(mm, sw, sel), sel, which=(est,))
                    f = flags({m: e[m][est] for m in METRICS}, tol, a, "R1")
                    hit += any(f.values()) if kind == "aa" else f["decode"]
                row.append(f"{hit / len(js):.2f}")
            cells.append(f"{scheme}: " + " ".join(row))
        print(f"{sc:14s} {'FA any' if kind == 'aa' else 'det decode'} N={NS} | " + " | ".join(cells), flush=True)


def main():
    """PROBE_DIR=... python -m benchmarks.ab_estimators noise | fixed SCEN... | fixedsub SCEN... | report | reportsub |
    seq EST TOLdec,TOLe2e,TOLttft ALPHA [NMIN-NMAX ...]   [--quick]"""
    args = [x for x in sys.argv[1:] if x != "--quick"]
    if D == "/" or not args:
        sys.exit("usage: PROBE_DIR=<folder of the H200 probe recordings, e.g. the project's shared "
                 "reference/h200-paired-probe> python -m benchmarks.ab_estimators noise|fixed|fixedsub|rec|"
                 "report|reportsub|seq ... [--quick]")
    data = load()
    t0 = time.time()
    if args[0] == "noise":
        part_noise(data)
    elif args[0] == "fixed":
        part_fixed(data, args[1:] or SCEN)
    elif args[0] == "fixedsub":
        part_fixed(data, args[1:] or SCEN[:4], schemes=("sub", "subswap"))
    elif args[0] == "rec":
        part_rec(data, args[1:] or SCEN)
    elif args[0] == "report":
        part_report()
    elif args[0] == "reportsub":
        part_report_sub()
    elif args[0] == "seq":
        rng = tuple(tuple(map(int, r.split("-"))) for r in args[4:]) or ((10, 30), (15, 40), (20, 40))
        part_seq(data, args[1], args[2], float(args[3]), rng)
    print(f"({time.time() - t0:.1f}s)", file=sys.stderr)



def part_report_sub():
    """Tables for the without-replacement subsampling schemes (the main result)."""
    raw = json.load(open(RATES))
    rates = {}
    for k, v in raw.items():
        sc, scheme, n, est, tol, a, rule = k.split("|")
        if len(v) == 5:
            rates[(sc, scheme, int(n), est, float(tol), float(a), rule)] = v

    def g(sc, scheme, n, est, tol, a, rule, col):
        v = rates.get((sc, scheme, n, est, tol, a, rule))
        return "  - " if v is None else f"{v[col]:.2f}"

    for a in ALPHAS:
        for rule in ("R1", "R2"):
            print(f"\n## subsample w/o replacement, alpha={a:.4f} {rule}. AAsw: any-metric false alarm, per-pair"
                  f" swap null, 448/1024; AA: same keeping the recording's side offset; AB: decode detection 448/1024\n")
            for est in ESTS:
                for tol in TOLS:
                    print(f"{est:7s} {tol:.2f} | " + " | ".join(
                        f"N={n}: " + "/".join(g(s, "subswap", n, est, tol, a, rule, 3) for s in SCEN[:2]) + " " +
                        "/".join(g(s, "sub", n, est, tol, a, rule, 3) for s in SCEN[:2]) + " " +
                        "/".join(g(s, "sub", n, est, tol, a, rule, 0) for s in SCEN[2:4]) for n in NS))
    print("\n## per-metric A/A false alarms (sub, keeps side offset), R1, alpha=0.0083: decode/e2e/ttft 448 ; 1024\n")
    for est in ("wil", "mw", "pb-q75", "pb-q90", "pb-hd90"):
        for tol in TOLS:
            print(f"{est:7s} {tol:.2f} | " + " | ".join(
                f"N={n}: " + " ; ".join("/".join(g(s, "sub", n, est, tol, ALPHAS[1], "R1", c) for c in range(3))
                                        for s in SCEN[:2]) for n in (15, 20, 25, 30)))


if __name__ == "__main__":
    main()
