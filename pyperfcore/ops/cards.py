"""Model cards (Mitchell et al., 2019) from registry metadata and evaluation results.

Sections, in the paper's order: model details, intended use, factors, metrics, evaluation
data, training data, quantitative analyses (disaggregated by group, with confidence
intervals), ethical considerations, caveats and recommendations. Whatever the metadata does
not say is printed as "Not provided." so gaps are visible rather than hidden.
"""
from __future__ import annotations

import datetime as _dt
import html
import math

__all__ = ["ModelCard", "model_card"]

SECTIONS = ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data",
            "Training data", "Quantitative analyses", "Ethical considerations",
            "Caveats and recommendations")
_MISSING = "Not provided."


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    if v is None:
        return "n/a"
    return str(v)


def _ci(v) -> str:
    if not v or any(x is None or (isinstance(x, float) and math.isnan(x)) for x in v):
        return ""
    return f" [{v[0]:.3f}, {v[1]:.3f}]"


class ModelCard:
    """A card as structured sections: ``sections`` is a list of (title, blocks) where a block
    is ``("p", text)``, ``("kv", [(key, value)])`` or ``("table", header, rows)``."""

    def __init__(self, title: str, sections: list):
        self.title = title
        self.sections = sections

    def to_markdown(self) -> str:
        out = [f"# Model card: {self.title}", ""]
        for title, blocks in self.sections:
            out += [f"## {title}", ""]
            for b in blocks:
                if b[0] == "p":
                    out += [b[1], ""]
                elif b[0] == "kv":
                    out += [f"- **{k}**: {_md(v)}" for k, v in b[1]] + [""]
                else:
                    _, header, rows = b
                    out.append("| " + " | ".join(header) + " |")
                    out.append("|" + "---|" * len(header))
                    out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
                    out.append("")
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
               f"<title>Model card: {e(self.title)}</title></head><body>",
               f"<h1>Model card: {e(self.title)}</h1>"]
        for title, blocks in self.sections:
            out.append(f"<h2>{e(title)}</h2>")
            for b in blocks:
                if b[0] == "p":
                    out.append(f"<p>{e(b[1])}</p>")
                elif b[0] == "kv":
                    out.append("<ul>" + "".join(f"<li><strong>{e(str(k))}</strong>: "
                                                f"{e(str(v))}</li>" for k, v in b[1]) + "</ul>")
                else:
                    _, header, rows = b
                    out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                               + "</tr></thead><tbody>")
                    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                            for r in rows]
                    out.append("</tbody></table>")
        out.append("</body></html>")
        return "\n".join(out)

    def save(self, path) -> None:
        """Write Markdown (``.md``) or HTML (``.html``/``.htm``) by suffix."""
        p = str(path)
        text = self.to_html() if p.endswith((".html", ".htm")) else self.to_markdown()
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)


def _md(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _text_or_list(v) -> list:
    if v is None or v == "" or v == [] or v == {}:
        return [("p", _MISSING)]
    if isinstance(v, str):
        return [("p", v)]
    if isinstance(v, dict):
        return [("kv", [(k, _fmt(x) if not isinstance(x, (dict, list)) else x)
                        for k, x in v.items()])]
    if isinstance(v, (list, tuple)):
        return [("kv", [(i + 1, x) for i, x in enumerate(v)])]
    return [("p", str(v))]


def model_card(version, *, fairness=None, approvals=None, aliases=None) -> ModelCard:
    """Build a card for a :class:`~pyperfcore.ops.registry.ModelVersion`.

    Parameters
    ----------
    fairness : a :class:`~pyperfcore.ops.fairness.FairnessReport` or its ``to_dict()``, or
        ``metadata["fairness"]`` when omitted; rendered as the disaggregated analysis.
    approvals : sign-offs to list under model details (``Registry.approvals(...)``).
    """
    md = version.metadata
    details = [("Name", version.name), ("Version", version.version), ("Stage", version.stage),
               ("Registered", _dt.datetime.fromtimestamp(version.created, _dt.timezone.utc)
                .strftime("%Y-%m-%d %H:%M:%S UTC")),
               ("Registered by", version.created_by or "n/a")]
    for key, label in (("description", "Description"), ("model_type", "Model type"),
                       ("framework", "Framework"), ("code_version", "Code version"),
                       ("parent", "Derived from"), ("license", "License"),
                       ("contact", "Contact"), ("feature_version", "Feature version")):
        if md.get(key) is not None:
            details.append((label, md[key]))
    for aname, info in sorted(version.manifest.items()):
        details.append((f"Artifact {aname}", f"{info['format']}, {info['size']} bytes, "
                                             f"sha256 {info['sha256']}"))
    if aliases:
        details.append(("Aliases", ", ".join(aliases)))
    if version.notice:
        details.append(("Deprecation notice", version.notice))
    blocks_details = [("kv", details)]
    if approvals:
        blocks_details.append(("table", ["Role", "Approver", "Comment"],
                               [[a["role"], a["approver"], a.get("comment") or ""]
                                for a in approvals]))

    metrics = md.get("metrics") or {}
    metric_blocks = ([("table", ["Metric", "Value"], [[k, _fmt(v)] for k, v in
                                                     sorted(metrics.items())])]
                     if metrics else [("p", _MISSING)])
    if md.get("metric_definitions"):
        metric_blocks += _text_or_list(md["metric_definitions"])

    td = md.get("training_data")
    ev = md.get("evaluation_data") or (md.get("evaluation") or {}).get("data")

    fair = fairness if fairness is not None else md.get("fairness")
    if fair is not None and hasattr(fair, "to_dict"):
        fair = fair.to_dict()
    if fair:
        rows = []
        for g, m in fair["groups"].items():
            rows.append([g, m["n"], _fmt(m["selection_rate"]) + _ci(m.get("selection_rate_ci")),
                         _fmt(m["tpr"]) + _ci(m.get("tpr_ci")),
                         _fmt(m["fpr"]) + _ci(m.get("fpr_ci")),
                         _fmt(m["accuracy"]) + _ci(m.get("accuracy_ci"))])
        flagged = fair.get("four_fifths_flagged") or []
        quant = [("table", ["Group", "n", "Selection rate [95% CI]", "TPR [95% CI]",
                            "FPR [95% CI]", "Accuracy [95% CI]"], rows),
                 ("kv", [("Demographic parity difference",
                          _fmt(fair["demographic_parity_difference"])),
                         ("Demographic parity ratio", _fmt(fair["demographic_parity_ratio"])),
                         ("Equalized odds difference", _fmt(fair["equalized_odds_difference"])),
                         ("Four-fifths rule", "adverse impact flagged for: " + ", ".join(flagged)
                          if flagged else "no group below 0.8 of the highest selection rate")])]
    else:
        quant = _text_or_list(md.get("quantitative_analyses"))
    sections = [
        ("Model details", blocks_details),
        ("Intended use", _text_or_list(md.get("intended_use"))),
        ("Factors", _text_or_list(md.get("factors"))),
        ("Metrics", metric_blocks),
        ("Evaluation data", _text_or_list(ev)),
        ("Training data", _text_or_list(td)),
        ("Quantitative analyses", quant),
        ("Ethical considerations", _text_or_list(md.get("ethical_considerations"))),
        ("Caveats and recommendations", _text_or_list(md.get("caveats"))),
    ]
    return ModelCard(f"{version.name} v{version.version}", sections)
