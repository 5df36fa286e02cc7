"""Markdown summary of a results dict (``summary.md``; docs/benchmarks.md quotes it)."""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import fmt_s, md_table
from bench.flower import MEASURED


def _measured(g: dict[str, Any]) -> str:
    return "not measured" if g.get("value") is None else f"{g['value']:.3g}"


def _verdict(g: dict[str, Any], bold_not_met: bool = False) -> str:
    """``**met**`` / ``not met`` for a measured goal; ``n/a`` for an informational one; ``no verdict`` when
    nothing was measured (a goal's verdict only ever comes from a figure of this run)."""
    if g.get("value") is None:
        return "no verdict"
    return {True: "**met**", False: "**not met**" if bold_not_met else "not met", None: "n/a"}[g.get("met")]


def goals_table(results: dict[str, Any]) -> str:
    rows = []
    for name, r in results.items():
        if name == "meta" or not isinstance(r, dict):
            continue
        for g in r.get("goals", []):
            v = g.get("value")
            rows.append({
                "benchmark": name, "goal": g["goal"], "measured": _measured(g), "target": g["target"],
                "met": _verdict(g), "note": g.get("note", ""),
            })
        if r.get("error"):
            rows.append({"benchmark": name, "goal": "(benchmark failed)", "measured": "-", "target": "-", "met": "error", "note": r["error"][:120]})
    return md_table(rows, ["benchmark", "goal", "measured", "target", "met", "note"])


def runs_line(results: dict[str, Any]) -> str:
    """``name start-end (load a -> b)`` for every benchmark that recorded its run window."""
    parts = []
    for name, r in results.items():
        if name == "meta" or not isinstance(r, dict) or not r.get("ran"):
            continue
        ran = r["ran"]

        def hm(t: str | None) -> str:
            return t[11:16] if t else "?"

        def la(x: Any) -> str:
            return f"{x[0]:.1f}" if x else "?"

        parts.append(f"{name} {hm(ran.get('started_utc'))}-{hm(ran.get('finished_utc'))} (load {la(ran.get('loadavg_start'))} -> "
                     f"{la(ran.get('loadavg_end'))})")
    return "; ".join(parts)


def _s(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        o = dict(r)
        for k in keys:
            if k in o and isinstance(o[k], (int, float)):
                o[k] = fmt_s(float(o[k]))
        out.append(o)
    return out


def render(results: dict[str, Any], images: list[str] | None = None) -> str:
    meta = results.get("meta", {})
    mach = meta.get("machine", {})
    L = ["# Benchmark summary", ""]
    L.append(f"Command: `{meta.get('command', '')}` -- started {meta.get('started_utc', '?')}, finished {meta.get('finished_utc', '?')}.")
    L.append(f"Machine: {mach.get('Model name', '?')}, {mach.get('cpus', '?')} CPUs, {mach.get('mem_total_mib', '?')} MiB RAM, "
             f"load average at start {mach.get('loadavg', '?')}, at end {meta.get('loadavg_end', '?')}; AES-256-CTR keystream "
             f"{mach.get('aes_ctr_gb_per_s', '?')} GB/s; numpy {mach.get('numpy', '?')}, cryptography {mach.get('cryptography', '?')}, "
             f"torch {mach.get('torch', '?')} ({meta.get('torch_threads', '?')} thread(s)). Repeats per timing: {meta.get('repeats', '?')} (median).")
    runs = runs_line(results)
    if runs:
        L += ["", "Each benchmark's run (UTC; load average 1-min at start -> end, 2 CPUs): " + runs + "."]
    L += ["", "## Goals", "", goals_table(results)]
    pp = results.get("protocol_phases", {})
    if pp.get("mask_primitive"):
        L += ["## 1. Protocol phases", "", "### Client mask expansion vs the AES-CTR floor (k+1 masks of d words, M = 2^32)", "",
              md_table(_s(pp["mask_primitive"], ["mask_s", "loop_s", "floor_s"]),
                       [c for c in ["d", "k", "keystream_bytes", "mask_s", "floor_s", "ratio", "mask_gb_per_s", "loop_s", "loop_ratio"]
                        if c in pp["mask_primitive"][0]],
                       {"mask_s": "add_masks_s", "ratio": "ratio", "loop_s": "add_mask_loop_s", "loop_ratio": "loop_ratio"}),
              "`add_masks_s`: one `prg.add_masks(y, k+1 masks, base=x)` as the client calls it; `add_mask_loop_s`: the former "
              "`x.copy()` + one `prg.add_mask` per mask, timed in the same interleaved run.", ""]
    if pp.get("phase_primitive"):
        L += ["### Per-client costs of the other phases (complete graph, one client with n-1 peers)", "",
              md_table(_s(pp["phase_primitive"], ["client_key_agreement_s", "client_shamir_split_s", "client_share_encryption_s",
                                                   "server_reconstruct_one_s", "server_reconstruct_one_cached_s"]))]
    if pp.get("survivor_policy"):
        L += ["### Survivor policy (G[U3] connected, |U3| >= min_survivors; 5% of clients missing)", "",
              md_table(_s(pp["survivor_policy"], ["policy_s", "one_mask_d1e4_s"])),
              "`one_mask_d1e4_s`: one PRG mask of 10^4 words, for scale (the server expands |U3| of them).", ""]
    if pp.get("engine"):
        cols = ["n", "d", "graph", "k", "t", "variant", "dropout", "wall_s", "advertise-keys/client_mean_s", "share-keys/client_mean_s",
                "masked-input/client_mean_s", "unmasking/client_mean_s", "masked-input/server_s", "unmasking/server_s",
                "client_masking_ratio", "server_unmasking_ratio"]
        hd = {"advertise-keys/client_mean_s": "keys/client", "share-keys/client_mean_s": "share/client", "masked-input/client_mean_s": "mask/client",
              "unmasking/client_mean_s": "unmask/client", "masked-input/server_s": "sum/server", "unmasking/server_s": "unmask/server",
              "client_masking_ratio": "client mask/floor", "server_unmasking_ratio": "server unmask/floor"}
        L += ["### Engine: per-round times (client = mean per client; server = whole round)", "",
              md_table(_s(pp["engine"], [c for c in cols if c.endswith("_s")]), cols, hd)]
        if pp.get("engine_workers"):
            wcols = ["n", "d", "graph", "k", "dropout", "workers", "wall_s", "serial_wall_s", "speedup_vs_serial", "share-keys/clients_wall_s",
                     "masked-input/clients_wall_s", "unmasking/server_s", "client_masking_ratio"]
            whd = {"share-keys/clients_wall_s": "share (clients wall)", "masked-input/clients_wall_s": "mask (clients wall)",
                   "unmasking/server_s": "unmask/server", "client_masking_ratio": "client mask/floor (summed client s)"}
            L += ["### Engine with parallel clients (`workers=2`: two forked processes) vs serial", "",
                  md_table(_s(pp["engine_workers"], [c for c in wcols if c.endswith("_s")]), wcols, whd)]
        elif pp.get("engine_workers_skipped"):
            L += [f"Parallel clients not measured: {pp['engine_workers_skipped']}.", ""]
        if pp.get("engine_skipped"):
            L += [f"Skipped (estimated over the per-configuration budget): {len(pp['engine_skipped'])} configurations, e.g. "
                  + ", ".join(f"n={s['n']} d={s['d']} {s['graph']} drop={s['dropout']} (~{s['estimate_s']:.0f} s)" for s in pp["engine_skipped"][:6]) + ".", ""]
    if pp.get("server_unmask_primitive"):
        L += ["### Server unmasking on the server's primitives (n=500, 10% dropouts)", "",
              md_table(_s(pp["server_unmask_primitive"], ["server_unmasking_s", "floor_s"]))]
    if pp.get("robust_reconstruction"):
        L += ["### Robust reconstruction of the self-mask seeds (complete graph, r = n shares each)", "",
              md_table(_s(pp["robust_reconstruction"], ["t_only_s", "consistent_s", "one_wrong_s", "floor_s"]))]
    fl = results.get("flower", {})
    if fl.get("rows") or fl.get("skipped"):
        L += ["## 2. Against Flower SecAgg+", ""]
        if fl.get("skipped"):
            L += ["```", fl["skipped"], "```", ""]
        if fl.get("rows"):
            fcols = ["n", "d", "graph", "t", "ours_s", "flower_s", "speedup", "ours_w2_s", "speedup_w2", "source", "ours_ok", "flower_ok",
                     "flower_clients_s", "flower_server_s", "flower_transport_s"]
            if not any("ours_w2_s" in r for r in fl["rows"]):
                fcols = [c for c in fcols if c not in ("ours_w2_s", "speedup_w2")]
            L += [md_table(_s(fl["rows"], ["ours_s", "ours_w2_s", "flower_s", "flower_clients_s", "flower_server_s", "flower_transport_s",
                                           "flower_wall_with_protobuf_s"]), fcols,
                           {"ours_s": "ours_s (serial)", "speedup": "speedup (serial)", "ours_w2_s": "ours_s (workers=2)", "speedup_w2": "speedup (workers=2)"})]
    wz = results.get("weiszfeld", {})
    if wz.get("rows"):
        L += ["## 3. Weiszfeld vs geom_median", "", md_table(_s(wz["rows"], ["ours_s", "geom_median_s"]))]
    tr = results.get("training", {})
    if tr.get("rows"):
        L += ["## 4. Training round", "", f"Setting: {tr.get('setting')}", "", md_table(_s(tr["rows"], ["round_s"]))]
    co = results.get("communication", {})
    if co.get("model"):
        sel = [r for r in co["model"] if r["d"] in (10**4, 10**6, 2**20, 2**24)]
        L += ["## 6. Communication", "", "### Analytical model (our wire format) vs the paper's accounting", "",
              md_table(sel, ["n", "d", "graph", "k", "dropout", "modulus_bits", "upload_per_client", "download_per_client", "expansion_upload",
                             "expansion_traffic", "paper_expansion", "exact"])]
        L += ["### Modulus bit-width", "", md_table(co.get("bitwidth", []))]
        L += ["### Cross-check: measured ledgers vs the model", "", md_table(co.get("cross_check", []))]
        if co.get("consistency"):
            L += ["### Active SecAgg+: the U3 a client signs, in full or as its window", "",
                  md_table(co["consistency"]["model"]), md_table(_s(co["consistency"]["measured"], ["full_s", "window_s"]))]
        if co.get("rfa"):
            L += ["### RFA vs FedAvg: bytes per participating client per round", "", md_table(co["rfa"])]
    sc = results.get("scale", {})
    if sc.get("round") or sc.get("memory"):
        L += ["## 5. Scale", ""]
        r = dict(sc.get("round", {}))
        r.pop("timings", None)
        L += [md_table([r]), md_table([sc.get("memory", {})])]
    if images:
        L += ["## Plots", ""] + [f"![{p}]({p})" for p in images] + [""]
    return "\n".join(L) + "\n"


BEGIN = "<!-- BEGIN GENERATED by `python -m bench --docs` -->"
END = "<!-- END GENERATED -->"


def splice_docs(results: dict[str, Any], path: str, images: list[str] | None = None) -> None:
    """Replace the text between :data:`BEGIN` and :data:`END` in ``path`` with the rendered tables
    (headings demoted one level); append the section if the markers are absent."""
    body = render(results, images).replace("\n### ", "\n#### ").replace("\n## ", "\n### ")
    body = body.replace("# Benchmark summary", "## Generated tables (last suite run)", 1)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    text = fill_inline(text, inline_values(results))
    with open(path, "w") as f:
        f.write(text)


def write_summary(results: dict[str, Any], path: str, images: list[str] | None = None) -> str:
    md = render(results, images)
    with open(path, "w") as f:
        f.write(md)
    return md


# ------------------------------------------------------------------------------------------------
# inline figures of the hand-written part of docs/benchmarks.md: <!--v:NAME-->text<!--/v-->
# ------------------------------------------------------------------------------------------------
def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def inline_values(results: dict[str, Any]) -> dict[str, str]:
    """Figures quoted in the prose of docs/benchmarks.md, computed from a results dict."""
    v: dict[str, str] = {}
    goals = {g["goal"]: g for r in results.values() if isinstance(r, dict) for g in r.get("goals", [])}

    def gv(prefix: str) -> dict[str, Any] | None:
        for k, g in goals.items():
            if k.startswith(prefix):
                return g
        return None

    g = gv("client mask expansion")
    v["prim"] = f"{_fmt_ratio(g and g['value'])} ({g['note']})" if g else "n/a"
    g = gv("client masking / AES-CTR floor")
    v["engine"] = _fmt_ratio(g and g["value"])
    g = gv("server unmasking / floor, n=500, d=1e+05, 10% dropouts, complete (server primitives)")
    v["su_complete"] = _fmt_ratio(g and g["value"])
    g = gv("server unmasking / floor, n=500, d=1e+05, 10% dropouts, secagg+ (server primitives)")
    v["su_splus"] = _fmt_ratio(g and g["value"])
    g = gv("server unmasking / floor, n=500, d=1e5, 10% dropouts, secagg+ (engine)")
    v["su_engine"] = _fmt_ratio(g and g["value"])
    fl = results.get("flower", {}).get("rows", [])
    v["flower"] = "; ".join(
        f"n={r['n']}, d={r['d']:.0e}, {r['graph'].split(' (')[0]}: ours {fmt_s(r['ours_s'])}, Flower {fmt_s(r['flower_s'])}"
        f" -> **{r['speedup']:.1f}x**"
        + (f" (ours with workers=2: {fmt_s(r['ours_w2_s'])} -> {r['speedup_w2']:.1f}x)" if r.get("speedup_w2") else "")
        for r in fl if r.get("speedup") and r.get("source") == MEASURED) or "not measured in this run"
    pp = results.get("protocol_phases", {})
    prim = pp.get("mask_primitive", [])
    if prim and "loop_ratio" in prim[0]:
        dmax = max(r["d"] for r in prim)
        sel = [r for r in prim if r["d"] == dmax]
        v["prim_loop"] = (f"{statistics.median(r['loop_ratio'] for r in sel):.2f}x "
                          f"(range {min(r['loop_ratio'] for r in sel):.2f}-{max(r['loop_ratio'] for r in sel):.2f})")
    ew = pp.get("engine_workers", [])
    if ew:
        v["workers"] = "; ".join(f"n={r['n']}, d={r['d']:.0e}, {r['graph']}, {int(r['dropout'] * 100)}% dropouts: {fmt_s(r['wall_s'])} "
                                 f"vs {fmt_s(r['serial_wall_s'])} serial ({r['speedup_vs_serial']:.2f}x)" for r in ew)
    else:
        v["workers"] = "not measured (" + pp.get("engine_workers_skipped", "no rows") + ")"
    wz = results.get("weiszfeld", {}).get("rows", [])
    if wz:
        rs = sorted(r["ratio"] for r in wz)
        v["weisz"] = (f"ours / geom_median over {len(wz)} rows: median {rs[len(rs) // 2]:.2f}x, best {rs[0]:.2f}x, worst {rs[-1]:.2f}x "
                      f"(worst: " + ", ".join(f"m={r['m']}, d={r['d']:.0e}, {r['data']}, R={r['iterations']}" for r in wz if r["ratio"] == rs[-1]) + ")")
    tr = {(r["aggregator"], r["oracle"]): r for r in results.get("training", {}).get("rows", [])}
    if tr:
        b = tr[("fedavg", "ideal")]["round_s"]
        v["train_fedavg_modular"] = fmt_s(tr[("fedavg", "modular")]["round_s"]) if ("fedavg", "modular") in tr else "n/a"
        v["train"] = ", ".join(f"{a} + {o}: {fmt_s(r['round_s'])} ({r['ratio_to_fedavg']:.2f}x)" for (a, o), r in tr.items())
        v["train_fedavg"] = fmt_s(b)
        if ("rfa", "modular") in tr and ("fedavg", "modular") in tr:
            v["train_rfa_vs_secure"] = f"{tr[('rfa', 'modular')]['round_s'] / tr[('fedavg', 'modular')]['round_s']:.2f}x"
    sc = results.get("scale", {})
    r = sc.get("round", {})
    if r.get("ok"):
        v["scale_round"] = f"**{r['wall_s']:.0f} s** (goal < 600 s), sum correct"
    m = sc.get("memory", {})
    if m.get("ok"):
        v["scale_mem"] = (f"**{m['server_peak_rss_mib']:.0f} MiB** peak resident for the whole server process (goal < 1 GiB), "
                          f"{m['server_peak_minus_base_mib']:.0f} MiB above the idle interpreter, tracemalloc peak {m['server_traced_peak_mib']:.0f} MiB")
    lines = []
    for name, r in results.items():
        if name == "meta" or not isinstance(r, dict):
            continue
        for g in r.get("goals", []):
            val = _measured(g)
            met = _verdict(g, bold_not_met=True)
            lines.append(f"* {g['goal']}: {val} (target {g['target']}) -- {met}" + (f"; {g['note']}" if g.get("note") else ""))
    v["goals"] = "\n" + "\n".join(lines) + "\n"
    meta = results.get("meta", {})
    v["runtime"] = runs_line(results) or f"{meta.get('started_utc', '?')} - {meta.get('finished_utc', '?')}"
    return v


def fill_inline(text: str, values: dict[str, str]) -> str:
    """Replace ``<!--v:NAME-->...<!--/v-->`` spans with ``values[NAME]`` (unknown names are left alone)."""
    import re

    def sub(mo: "re.Match[str]") -> str:
        name = mo.group(1)
        return f"<!--v:{name}-->{values[name]}<!--/v-->" if name in values else mo.group(0)

    return re.sub(r"<!--v:([a-z_]+)-->.*?<!--/v-->", sub, text, flags=re.S)
