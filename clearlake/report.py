"""A classify run's report for the Prefect UI: charts, thumbnails of the worst images, links.

The report is one markdown artifact, self-contained: its pictures are `data:` URIs,
so nothing has to be served for it and nothing outside it is fetched.

What Prefect's UI renders in a markdown artifact (looked at in headless Chromium on
Prefect 3.9.1, both its default Vue UI and its React UI under `/v2`):

- markdown images `![alt](src)` whose `src` is a `data:image/png|jpeg|svg+xml;base64,…`
  URI or an http URL (the viewer's browser fetches it), also inside table cells. The
  Vue UI (prefect-design's `PMarkdownRenderer`) turns an image token into an `<img>`
  with that `src` untouched;
- raw HTML blocks, through DOMPurify with `style` attributes forbidden (Vue UI); an
  inline `<svg>` element shows nothing in either UI;
- not an image inside a markdown link (`[![…](…)](…)`): the Vue UI shows the link's
  source text. So thumbnails sit in a table cell next to their path and review link;
- a link's text as its markdown source (Vue UI): no escapes or code spans in link texts,
  so links carry plain words or commit ids, and paths, escaped, stand in their own cells.

The server stores an artifact's data in a JSON column with no size limit of its own
(`ArtifactCreate.data` is unbounded in prefect 3.9.1); the bounds are ours: at most
`MAX_THUMBNAILS` thumbnails of `THUMBNAIL_PX` pixels, JPEG at `THUMBNAIL_QUALITY`
(a few KiB each), and two small SVG charts.

Links go to the bridge's review pages (`/review/REPO/REF`, which ask for a login: no
token ever goes into a report) and to lakeFS's object viewer on the results table.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from xml.sax.saxutils import escape as xml_escape

import cv2
import numpy as np

from clearlake.config import LOOPBACK, recorded_ports
from clearlake.errors import LakeFSError
from clearlake.lakefs import LakeFS
from clearlake.layout import table_folder
from clearlake.pipeline import worst_images
from clearlake.quality.decode import decode

MAX_THUMBNAILS = 8
THUMBNAIL_PX = 128  # longest side
THUMBNAIL_QUALITY = 80
THUMBNAIL_SOURCE_MAX_BYTES = 64 << 20  # an image larger than this is named, not read
HISTOGRAM_BINS = 10
LABEL_COLOURS = {"good": "#2e7d32", "blurry": "#ef6c00", "moire": "#6a1b9a"}
OTHER_COLOUR = "#757575"  # labels of other models, and outcomes without a label
HISTOGRAM_COLOUR = "#3367d6"
_FONT = 'font-family="sans-serif" font-size="12"'
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")


# -- links -------------------------------------------------------------------------------------


def public_url(url: str) -> str:
    """`url` without user information, query or fragment: safe to show in a page."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def bridge_url() -> str:
    """The bridge as a person's browser reaches it: `CLEARLAKE_BRIDGE_URL`, else the local
    stack's (the port it was last started with)."""
    from clearlake.settings import settings

    return public_url(settings().bridge_url or f"http://{LOOPBACK}:{recorded_ports()['bridge']}")


def lakefs_folder_url(lakefs_ui: str, repository: str, ref: str, folder: str) -> str:
    """lakeFS's object browser on a folder (a Parquet file in it opens with a DuckDB query)."""
    return (f"{public_url(lakefs_ui)}/repositories/{quote(repository, safe='')}/objects"
            f"?ref={quote(ref, safe='')}&path={quote(folder, safe='/')}")


def lakefs_commit_url(lakefs_ui: str, repository: str, commit: str) -> str:
    """lakeFS's page of one commit."""
    return (f"{public_url(lakefs_ui)}/repositories/{quote(repository, safe='')}/commits/"
            f"{quote(commit, safe='')}")


def review_url(bridge: str, repository: str, ref: str) -> str:
    """The review page of a ref: the grid of thumbnails (served by the bridge, with a login)."""
    return f"{public_url(bridge)}/review/{quote(repository, safe='')}/{quote(ref, safe='')}"


def review_image_url(bridge: str, repository: str, ref: str, path: str) -> str:
    """The review page of one image at a ref (the review app's `REF/image?path=P`)."""
    return f"{review_url(bridge, repository, ref)}/image?path={quote(path, safe='/')}"


def review_diff_url(bridge: str, repository: str, from_ref: str, to_ref: str) -> str:
    """The review page of the quality diff between two refs."""
    return (f"{public_url(bridge)}/review/{quote(repository, safe='')}/"
            f"{quote(from_ref, safe='')}...{quote(to_ref, safe='')}")


def report_key(repository: str, branch: str) -> str:
    """The artifact key of a branch's run reports (Prefect allows lower-case letters, digits
    and dashes): the Prefect UI lists a key's reports, newest first."""
    return "report-" + "".join(c if c.isascii() and c.isalnum() else "-"
                               for c in f"{repository}-{branch}".lower())


def prefect_artifact_url(prefect_api_url: str, artifact_id: str) -> str:
    """The Prefect UI page of one artifact (route `/artifacts/artifact/:artifactId`)."""
    return f"{public_url(prefect_api_url).removesuffix('/api')}/artifacts/artifact/{artifact_id}"


def run_report_id(flow_run_id: str, repository: str, branch: str) -> str | None:
    """The id of the report a flow run published for a branch, None when it published none."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=[report_key(repository, branch)])))
    return str(found[0].id) if found else None


# -- charts ------------------------------------------------------------------------------------


def _svg(width: int, height: int, body: list[str]) -> str:
    """An SVG document on a white card (legible on the UI's light and dark themes)."""
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT}>',
        f'<rect width="{width}" height="{height}" rx="4" fill="#ffffff" stroke="#d0d0d0"/>',
        *body,
        "</svg>",
    ])


def label_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Images per label; an image without a label counts under its outcome ('corrupt', …).

    Ordered as the chart shows them: labels by decreasing count (then name), then outcomes.
    """
    labels: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for r in records:
        bucket = labels if r.get("label") else outcomes
        name = r.get("label") or r["outcome"]
        bucket[name] = bucket.get(name, 0) + 1
    ordered = sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))
    ordered += sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ordered)


def label_chart_svg(counts: Mapping[str, int], title: str) -> str:
    """A horizontal bar per label, longest bar 200 px, its count after it."""
    row, top, left, longest = 22, 30, 100, 200
    width, height = 360, top + row * max(len(counts), 1) + 8
    most = max(counts.values(), default=0)
    body = [f'<text x="10" y="19" font-weight="bold">{xml_escape(title)}</text>']
    for i, (name, count) in enumerate(counts.items()):
        y = top + i * row
        bar = max(1, round(longest * count / most)) if count else 0
        colour = LABEL_COLOURS.get(name, OTHER_COLOUR)
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">'
                    f"{xml_escape(_shorten(name, 14))}</text>")
        body.append(f'<rect x="{left}" y="{y + 2}" width="{bar}" height="16" fill="{colour}"/>')
        body.append(f'<text x="{left + bar + 6}" y="{y + 14}">{count}</text>')
    if not counts:
        body.append(f'<text x="{left}" y="{top + 14}">no images</text>')
    return _svg(width, height, body)


def histogram(values: Sequence[float], bins: int = HISTOGRAM_BINS) -> list[int]:
    """Counts of `values` in `bins` equal bins over [0, 1]; 1.0 falls in the last."""
    counts, _ = np.histogram(np.clip(np.asarray(values, dtype=float), 0.0, 1.0),
                             bins=bins, range=(0.0, 1.0))
    return [int(c) for c in counts]


def p_good_chart_svg(values: Sequence[float], title: str, bins: int = HISTOGRAM_BINS) -> str:
    """A histogram of P(good) over [0, 1]: bins 30 px wide, the tallest 100 px high."""
    left, base, tallest, bin_px = 40, 140, 100, 30
    width, height = left + bins * bin_px + 20, 168
    counts = histogram(values, bins)
    most = max(counts, default=0)
    body = [f'<text x="10" y="19" font-weight="bold">{xml_escape(title)}</text>',
            f'<line x1="{left}" y1="{base}" x2="{left + bins * bin_px}" y2="{base}" '
            f'stroke="#404040"/>']
    for i, count in enumerate(counts):
        if not count:
            continue
        bar = max(1, round(tallest * count / most))
        x = left + i * bin_px
        body.append(f'<rect x="{x + 2}" y="{base - bar}" width="{bin_px - 4}" height="{bar}" '
                    f'fill="{HISTOGRAM_COLOUR}"/>')
        body.append(f'<text x="{x + bin_px // 2}" y="{base - bar - 4}" '
                    f'text-anchor="middle">{count}</text>')
    for fraction, text in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        x = left + round(fraction * bins * bin_px)
        body.append(f'<text x="{x}" y="{base + 16}" text-anchor="middle">{text}</text>')
    return _svg(width, height, body)


def _shorten(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


# -- thumbnails --------------------------------------------------------------------------------


def thumbnail_jpeg(data: bytes) -> bytes | None:
    """A JPEG whose longest side is `THUMBNAIL_PX`, None when the bytes do not decode.

    Decoded by the pipeline's one decoder (`quality.decode`), so the thumbnail shows the
    pixels that were measured: orientation applied, alpha over white.
    """
    decoded = decode(data)
    if decoded.image is None:
        return None
    pixels = decoded.image.colour if decoded.image.colour is not None else decoded.image.grey
    height, width = pixels.shape[:2]
    scale = THUMBNAIL_PX / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
    return encoded.tobytes() if ok else None


@dataclass(frozen=True)
class Thumbnail:
    """The thumbnail of one image, or why there is none."""

    jpeg: bytes | None
    missing: str = ""


def read_thumbnails(
    lakefs: LakeFS, repository: str, ref: str, records: Sequence[Mapping[str, Any]],
    *, presigned: bool = False,
) -> dict[str, Thumbnail]:
    """Thumbnails of the images of `records` at `ref` (at most `MAX_THUMBNAILS` images of
    `THUMBNAIL_SOURCE_MAX_BYTES` each), read on a few threads: with `presigned`, from the
    object store through URLs one listing of lakeFS gives (lakeFS serves no byte), else
    through lakeFS's object API."""
    chosen = records[:MAX_THUMBNAILS]
    thumbnails = {r["path"]: Thumbnail(None, f"not read: {r['size'] / 2**20:.0f} MiB")
                  for r in chosen if (r.get("size") or 0) > THUMBNAIL_SOURCE_MAX_BYTES}
    wanted = [r["path"] for r in chosen if r["path"] not in thumbnails]
    urls = lakefs.presigned_urls(repository, ref, wanted) if presigned and wanted else {}

    def read(path: str) -> tuple[str, Thumbnail]:
        try:
            data = (lakefs.read_presigned(urls[path], repository, ref, path) if path in urls
                    else lakefs.get_object(repository, ref, path))
        except LakeFSError as error:
            return path, Thumbnail(None, f"not read: {type(error).__name__}")
        jpeg = thumbnail_jpeg(data)
        return path, Thumbnail(jpeg, "" if jpeg else "does not decode")

    with ThreadPoolExecutor(max_workers=4) as pool:  # decoding releases the GIL
        thumbnails.update(pool.map(read, wanted))
    return {r["path"]: thumbnails[r["path"]] for r in chosen}


def data_uri(mime: str, data: bytes) -> str:
    """`data` inline, as a `data:` URI."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def md_text(text: str) -> str:
    """`text` (a path, a label: anyone's) shown literally in markdown, never as markup."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text).replace("\n", " ")


def _code_block(lines: Sequence[str]) -> str:
    text = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


@dataclass(frozen=True)
class RunLinks:
    """Where a person looks further: the review pages, lakeFS's object viewer."""

    bridge: str
    lakefs_ui: str
    repository: str
    branch: str

    @property
    def review(self) -> str:
        return review_url(self.bridge, self.repository, self.branch)

    @property
    def results_table(self) -> str:
        return lakefs_folder_url(self.lakefs_ui, self.repository, self.branch,
                                 table_folder(self.branch))

    def image(self, path: str) -> str:
        return review_image_url(self.bridge, self.repository, self.branch, path)

    def commit(self, commit: str) -> str:
        return lakefs_commit_url(self.lakefs_ui, self.repository, commit)

    def diff(self, from_ref: str, to_ref: str) -> str:
        return review_diff_url(self.bridge, self.repository, from_ref, to_ref)


@dataclass(frozen=True)
class MergeDiff:
    """The quality diff a merge brought: from its first parent to the merge.

    Attributes:
        first_parent: the merge's first parent (what the branch held before).
        merge: the merge commit.
        compared_to: the ref whose records stood for the merge (its results commit).
        lines: the diff as text (`quality_diff.summary_lines`).
    """

    first_parent: str
    merge: str
    compared_to: str
    lines: Sequence[str]


def render_report(
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    links: RunLinks,
    thumbnails: Mapping[str, Thumbnail],
    merge_diff: MergeDiff | None = None,
) -> str:
    """The markdown of one run's report.

    Args:
        summary: the run's summary (`status`, `source_commit`, `results_commit`,
            `pending_branch`, `counts`).
        records: the records this run wrote (measured and relabelled images).
        links: the run's links.
        thumbnails: thumbnails by image path (`read_thumbnails`).
        merge_diff: the quality diff of a merge, when the run processed one.
    """
    repository, branch = links.repository, links.branch
    source = summary["source_commit"]
    counts = summary["counts"]
    lines = [f"# clearlake: {md_text(repository)}/{md_text(branch)}", ""]
    if summary.get("results_commit"):
        results = summary["results_commit"]
        where = f"results commit [{results[:12]}]({links.commit(results)})"
    else:
        where = (f"results **pending** on `{md_text(summary.get('pending_branch') or '')}` "
                 "(reconcile applies them)")
    lines += [
        f"**{md_text(summary['status'])}**: source commit [{source[:12]}]"
        f"({links.commit(source)}), {where}.",
        "",
        f"{len(records)} images labelled in this run: {counts['computed']} measured now, "
        f"{counts['reused']} reused from the metrics store, {counts['relabelled']} relabelled "
        f"(of which {counts['failed']} could not be measured: see their outcome); "
        f"{counts['removed']} removed.",
        "",
        f"[Review the images]({links.review}) (asks for a login) · "
        f"[Results table in lakeFS]({links.results_table}) (each part opens with a DuckDB query)",
        "",
        "## Labels and P(good)",
        "",
    ]
    scored = [r["probabilities"].get("good", 0.0) for r in records if r.get("probabilities")]
    charts = [("labels", label_chart_svg(label_counts(records), "Labels, this run"))]
    if scored:
        charts.append(("P(good)", p_good_chart_svg(scored, f"P(good), {len(scored)} images")))
    lines += [" ".join(f"![{alt}]({data_uri('image/svg+xml', svg.encode())})"
                       for alt, svg in charts), ""]
    worst = worst_images(records, MAX_THUMBNAILS)
    if worst:
        lines += ["## Least likely to be good", "",
                  "| image | path | label | P(good) | |", "| --- | --- | --- | --- | --- |"]
        for r in worst:
            thumbnail = thumbnails.get(r["path"], Thumbnail(None, "not read"))
            picture = (f"![thumbnail]({data_uri('image/jpeg', thumbnail.jpeg)})"
                       if thumbnail.jpeg else f"*{md_text(thumbnail.missing)}*")
            lines.append(f"| {picture} | {md_text(r['path'])} | "
                         f"{md_text(r['label'] or r['outcome'])} | "
                         f"{r['probabilities'].get('good', 0.0):.3f} | "
                         f"[review]({links.image(r['path'])}) |")
        lines.append("")
    if merge_diff is not None:
        lines += [
            f"## Quality diff of the merge: `{merge_diff.first_parent[:12]}` → "
            f"`{merge_diff.merge[:12]}`",
            "",
            f"From the merge's first parent to the merge (its labels as of `"
            f"{merge_diff.compared_to[:12]}`). [Review the diff]"
            f"({links.diff(merge_diff.first_parent, merge_diff.compared_to)})",
            "",
            _code_block(merge_diff.lines),
            "",
        ]
    return "\n".join(lines)
