//! What podman's role prints: `images` (a table, `-q`, `--format json`, Go-template fields in
//! common use), `inspect` (podman's JSON, or a template), `system info`.

use anyhow::bail;
use serde_json::{Value, json};

use super::as_podman::Globals;
use crate::output::outln;
use bootc_image::store::Store;

/// How `images` prints.
#[derive(Debug, Default)]
pub struct Format {
    json: bool,
    quiet: bool,
    no_heading: bool,
    no_trunc: bool,
    template: Option<String>,
}

/// The value of option `name` (`--name V`, `--name=V`, `-n V`) at `opts[*i]`, advancing `i`.
fn value_of(opts: &[&str], i: &mut usize, names: &[&str]) -> Option<String> {
    let o = opts[*i];
    for n in names {
        if o == *n {
            *i += 1;
            return opts.get(*i).map(|s| s.to_string());
        }
        if let Some(v) = o.strip_prefix(&format!("{n}=")) {
            return Some(v.to_string());
        }
    }
    None
}

impl Format {
    /// The format `images` options ask for; `None` for an option we do not serve (the real
    /// podman runs then).
    pub fn parse(opts: &[&str]) -> anyhow::Result<Option<Format>> {
        let mut f = Format::default();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                "-q" | "--quiet" => f.quiet = true,
                "-n" | "--noheading" => f.no_heading = true,
                "--no-trunc" => f.no_trunc = true,
                "-a" | "--all" => {}
                o if o.starts_with("--format") => {
                    let Some(v) = value_of(opts, &mut i, &["--format"]) else {
                        bail!("--format needs a value");
                    };
                    if v == "json" {
                        f.json = true;
                    } else {
                        f.template = Some(v);
                    }
                }
                _ => return Ok(None),
            }
            i += 1;
        }
        Ok(Some(f))
    }
}

/// The store the global options name, created if missing (as podman's first command does).
fn open(g: &Globals) -> anyhow::Result<Store> {
    Ok(Store::open(super::as_podman::cli_of(g)?.store_config()?)?)
}

/// podman's summary of an image (`images --format json`).
fn summary(store: &Store, img: &storage_format::ImageRecord) -> anyhow::Result<Value> {
    let i = store.inspect_image(img)?;
    let created = storage_format::time::rfc3339_seconds(i["Created"].as_str().unwrap_or_default())
        .unwrap_or(0);
    Ok(json!({
        "Id": img.id,
        "ParentId": "",
        // podman 4.3 and 5 leave this out of `images --format json` (null).
        "RepoTags": null,
        "RepoDigests": i["RepoDigests"],
        "Size": i["Size"],
        "SharedSize": 0,
        "VirtualSize": i["VirtualSize"],
        "Labels": i["Labels"],
        "Containers": 0,
        "Names": img.names,
        "Digest": i["Digest"],
        "History": img.names_history,
        "Created": created,
        "CreatedAt": rfc3339(created),
    }))
}

/// A size as podman prints it: three significant digits, decimal units (`199 kB`, `1.23 MB`).
fn human_size(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let int_digits = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let mut s = format!("{v:.prec$}", prec = 3usize.saturating_sub(int_digits));
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s} {}", units[u])
}

/// How long ago `then` (seconds since the epoch) was, as podman says it (`4 seconds ago`,
/// `About a minute ago`, `3 days ago`).
fn ago(then: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let d = (now - then).max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let text = match d {
        0 => "Less than a second".to_string(),
        1..60 => plural(d, "second"),
        60..120 => "About a minute".to_string(),
        120..3600 => plural(d / 60, "minute"),
        3600..7200 => "About an hour".to_string(),
        7200..172800 => plural(d / 3600, "hour"),
        172800..1209600 => plural(d / 86400, "day"),
        1209600..7776000 => plural(d / 604800, "week"),
        7776000..63072000 => plural(d / 2592000, "month"),
        _ => plural(d / 31536000, "year"),
    };
    format!("{text} ago")
}

/// An RFC 3339 time in UTC, seconds only (`2026-12-07T12:39:33Z`), as podman's JSON has it.
fn rfc3339(secs: i64) -> String {
    let epoch = std::time::UNIX_EPOCH;
    let at = if secs >= 0 {
        epoch + std::time::Duration::from_secs(secs.unsigned_abs())
    } else {
        epoch - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    storage_format::rfc3339_nano(at)
}

/// The rows of `images`: one per name (`<none>` for an image without one).
fn rows(summaries: &[Value], no_trunc: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for s in summaries {
        let id = s["Id"].as_str().unwrap_or_default();
        let short = if no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        };
        let tags: Vec<String> = s["Names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .filter(|n| !n.contains('@'))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let pairs: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in pairs {
            let mut row = s.clone();
            row["ID"] = short.clone().into();
            row["Repository"] = repo.into();
            row["Tag"] = tag.into();
            row["Size"] = human_size(s["Size"].as_i64().unwrap_or(0)).into();
            row["Created"] = ago(s["Created"].as_i64().unwrap_or(0)).into();
            out.push(row);
        }
    }
    out
}

/// `images`: the store's images as `format` says.
pub fn list(g: &Globals, format: &Format) -> anyhow::Result<()> {
    let store = open(g)?;
    let mut images = store.images()?;
    images.sort_by(|a, b| b.created.cmp(&a.created));
    let summaries: Vec<Value> = images
        .iter()
        .map(|i| summary(&store, i))
        .collect::<anyhow::Result<_>>()?;
    if format.json {
        // podman indents with four spaces.
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        serde::Serialize::serialize(&summaries, &mut ser)?;
        return outln!("{}", String::from_utf8_lossy(&buf));
    }
    if format.quiet {
        let mut seen = std::collections::HashSet::new();
        for s in &summaries {
            let id = s["Id"].as_str().unwrap_or_default();
            let shown: String = if format.no_trunc {
                id.into()
            } else {
                id.chars().take(12).collect()
            };
            if seen.insert(shown.clone()) {
                outln!("{shown}")?;
            }
        }
        return Ok(());
    }
    let template = format.template.clone().unwrap_or_else(|| {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Created}}\t{{.Size}}".to_string()
    });
    print_template(
        &template,
        &rows(&summaries, format.no_trunc),
        format.no_heading,
    )
}

/// Prints `rows` through a Go-template `format` (`{{.Field}}`, `{{json .A.B}}`, a `table`
/// prefix for a header and aligned columns).
fn print_template(format: &str, rows: &[Value], no_heading: bool) -> anyhow::Result<()> {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest.trim_start().to_string()),
        None => (false, format),
    };
    let mut lines: Vec<String> = Vec::new();
    if table && !no_heading {
        lines.push(render(&body, None)?);
    }
    for r in rows {
        lines.push(render(&body, Some(r))?);
    }
    if table {
        lines = align(&lines);
    }
    for l in lines {
        outln!("{l}")?;
    }
    Ok(())
}

/// Pads tab-separated columns to a common width (podman's tabwriter).
fn align(lines: &[String]) -> Vec<String> {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|r| {
            let mut s = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 < r.len() {
                    // Go's tabwriter as podman sets it up: cells at least 12 wide, 2 apart.
                    s.push_str(&format!("{cell:<w$}", w = (widths[c] + 2).max(12)));
                } else {
                    s.push_str(cell);
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}

/// One line of a template: each `{{…}}` evaluated on `row` (or, for a header, the field names in
/// capitals).
fn render(body: &str, row: Option<&Value>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            bail!("template {body:?}: a {{{{ without its }}}}");
        };
        let action = rest[start + 2..start + end].trim();
        rest = &rest[start + end + 2..];
        let (json_fn, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            bail!(
                "template action {{{{{action}}}}} is not served by bootc-image (fields: {{{{.Field}}}}, {{{{json .Field}}}})"
            );
        };
        let Some(row) = row else {
            out.push_str(&header(path));
            continue;
        };
        let v = lookup(row, path);
        out.push_str(&if json_fn {
            serde_json::to_string(&v)?
        } else {
            go_print(&v)
        });
    }
    out.push_str(rest);
    Ok(out)
}

/// A header for a field: `.Repository` → `REPOSITORY`, `.ID` → `IMAGE ID`.
fn header(path: &str) -> String {
    match path {
        "ID" | "Id" => "IMAGE ID".into(),
        p => p.to_uppercase(),
    }
}

/// The value at `path` (`RootFS.Layers`); a field matched exactly, else ignoring case.
fn lookup(v: &Value, path: &str) -> Value {
    let mut cur = v.clone();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let next = match &cur {
            Value::Object(m) => m.get(part).cloned().or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(part))
                    .map(|(_, v)| v.clone())
            }),
            _ => None,
        };
        cur = next.unwrap_or(Value::Null);
    }
    cur
}

/// A value as Go's template prints it: strings bare, lists `[a b]`, maps `map[k:v]`.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// `inspect [--type image] [--format F] NAME…`: the format and the names; `None` for options we
/// do not serve.
pub fn inspect_args(opts: &[&str]) -> anyhow::Result<Option<(Option<String>, Vec<String>)>> {
    let mut format = None;
    let mut names = Vec::new();
    let mut i = 0;
    while i < opts.len() {
        let o = opts[i];
        if o.starts_with("--format") || o == "-f" {
            format = value_of(opts, &mut i, &["--format", "-f"]);
        } else if o.starts_with("--type") || o == "-t" {
            if value_of(opts, &mut i, &["--type", "-t"]).as_deref() != Some("image") {
                return Ok(None);
            }
        } else if o.starts_with('-') {
            return Ok(None);
        } else {
            names.push(o.to_string());
        }
        i += 1;
    }
    if names.is_empty() {
        bail!("inspect needs at least one image");
    }
    Ok(Some((format.filter(|f| f != "json"), names)))
}

/// `inspect NAME…`: podman's JSON (as our `image inspect`), or each image through a template.
pub fn inspect(g: &Globals, format: &Option<String>, names: &[String]) -> anyhow::Result<()> {
    let Some(template) = format else {
        let command = ["image", "inspect"].into_iter().map(String::from);
        return crate::run(g.argv(command.chain(names.iter().cloned())));
    };
    let store = open(g)?;
    let images = store.images()?;
    let mut found = Vec::new();
    for n in names {
        let img = bootc_image::store::lookup::find_image(&images, n)?;
        found.push(store.inspect_image(img)?);
    }
    print_template(template, &found, true)
}

/// `system info`: the store's paths and counts, as podman's YAML lists them.
pub fn system_info(g: &Globals) -> anyhow::Result<()> {
    let store = open(g)?;
    let c = store.config();
    let n = store.images()?.len();
    outln!(
        "host:\n  serviceIsRemote: false\nstore:\n  graphDriverName: {}\n  graphRoot: {}\n  imageStore:\n    number: {n}\n  runRoot: {}\nversion:\n  Version: bootc-image {}",
        c.driver.name(),
        c.graphroot.display(),
        c.runroot.display(),
        env!("CARGO_PKG_VERSION")
    )
}
