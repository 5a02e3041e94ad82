//! `imageflowctl run`: upload one or more images to the backend, run a
//! pipeline on them as one execution through the synchronous path, print
//! each step with its timings (and the detections), and download each
//! input's final image.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The images to process (JPEG, PNG or WebP); several run as one
    /// execution, each through the whole pipeline.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the final image; with several inputs, input n's goes
    /// to `<stem>-<n>.<extension>`.
    #[arg(short, long, default_value = "data/pipeline-output.jpg")]
    output: PathBuf,
    /// A pipeline definition (JSON, the shape of `imageflow_pipeline::model`); default: resize 800x600
    /// → ai_detection (boxes drawn) → sharpen.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Run a stored pipeline by id instead.
    #[arg(long, conflicts_with = "pipeline")]
    pipeline_id: Option<String>,
    #[arg(
        long,
        env = "IMAGEFLOW_API_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    api: String,
    /// Bearer token, when the API requires one.
    #[arg(long, env = "IMAGEFLOW_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn default_pipeline() -> Value {
    json!({
        "pipelineName": "resize, detect, sharpen",
        "steps": [
            {"stepId": "resize", "componentName": "resize",
             "parameters": {"width": 800, "height": 600, "maintain_aspect_ratio": true}},
            {"stepId": "detect", "componentName": "ai_detection", "dependencies": ["resize"],
             "parameters": {"confidence_threshold": 0.5, "draw_boxes": true}},
            {"stepId": "sharpen", "componentName": "filter", "dependencies": ["detect"],
             "parameters": {"filter_type": "sharpen", "intensity": 1.0}}
        ]
    })
}

async fn checked(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        bail!("{what}: HTTP {status}: {message}");
    }
    Ok(body)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().context("token")?,
        );
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .default_headers(headers)
        .build()?;
    let api = args.api.trim_end_matches('/');
    let mut file_ids = Vec::new();
    for input in &args.inputs {
        let data =
            std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
        let file = checked(
            http.post(format!("{api}/v1/files"))
                .header("content-type", "application/octet-stream")
                .body(data)
                .send()
                .await
                .with_context(|| format!("cannot reach the backend at {api}"))?,
            "upload",
        )
        .await?;
        println!(
            "uploaded {} as {} ({}x{})",
            input.display(),
            file["file_id"].as_str().unwrap_or("?"),
            file["width"],
            file["height"]
        );
        file_ids.push(file["file_id"].clone());
    }

    let mut body = json!({ "inputs": file_ids });
    match (&args.pipeline_id, &args.pipeline) {
        (Some(id), _) => body["pipelineId"] = json!(id),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            body["pipeline"] = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
        }
        (None, None) => body["pipeline"] = default_pipeline(),
    }
    let record = checked(
        http.post(format!("{api}/v1/executions?wait=true"))
            .json(&body)
            .send()
            .await?,
        "execution",
    )
    .await?;

    let several = args.inputs.len() > 1;
    let mut shown_input = None;
    for step in record["steps"].as_array().into_iter().flatten() {
        let index = step["input_index"].as_u64().unwrap_or(0);
        if several && shown_input != Some(index) {
            shown_input = Some(index);
            let result = &record["input_results"][index as usize];
            println!(
                "input {index} ({}): {}",
                args.inputs
                    .get(index as usize)
                    .map_or("?".into(), |p| p.display().to_string()),
                result["status"].as_str().unwrap_or("?")
            );
        }
        let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let output = &step["output"];
        let target = if output.is_object() {
            format!(
                "{}x{} {}",
                output["width"],
                output["height"],
                output["object_key"].as_str().unwrap_or("")
            )
        } else {
            step["error"].as_str().unwrap_or("").to_string()
        };
        println!(
            "{:<12} {:<10} {:>10} (service {:>9})  {}",
            step["stepId"].as_str().unwrap_or("?"),
            step["status"].as_str().unwrap_or("?"),
            ms(&step["processing_time_ms"]),
            ms(&step["service_time_ms"]),
            target
        );
        for d in step["detections"].as_array().into_iter().flatten() {
            let b = &d["bbox"];
            println!(
                "    {} {:.2} [{:.0}, {:.0}, {:.0}, {:.0}]",
                d["class_name"].as_str().unwrap_or("?"),
                d["confidence"].as_f64().unwrap_or(0.0),
                b["x1"].as_f64().unwrap_or(0.0),
                b["y1"].as_f64().unwrap_or(0.0),
                b["x2"].as_f64().unwrap_or(0.0),
                b["y2"].as_f64().unwrap_or(0.0)
            );
        }
    }
    let status = record["status"].as_str().unwrap_or("?");
    println!(
        "execution {} {status} in {} ms",
        record["execution_id"].as_str().unwrap_or("?"),
        record["execution_time_ms"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.1}"))
    );
    if status != "completed" {
        bail!(
            "the execution did not complete: {}",
            record["error"].as_str().unwrap_or("no reason given")
        );
    }
    for result in record["input_results"].as_array().into_iter().flatten() {
        let Some(file_id) = result["output"]["file_id"].as_str() else {
            continue;
        };
        let path = if several {
            numbered(&args.output, result["index"].as_u64().unwrap_or(0))
        } else {
            args.output.clone()
        };
        let bytes = http
            .get(format!("{api}/v1/files/{file_id}/download"))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "wrote {} ({} bytes) in {:.1} ms end to end",
            path.display(),
            bytes.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// `dir/stem-n.ext` for input n's image.
fn numbered(output: &std::path::Path, n: u64) -> PathBuf {
    let stem = output
        .file_stem()
        .map_or("output".into(), |s| s.to_string_lossy().into_owned());
    let name = match output.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    output.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn several_outputs_are_numbered_beside_the_named_one() {
        let path = std::path::Path::new("data/pipeline-output.jpg");
        assert_eq!(
            super::numbered(path, 3),
            std::path::Path::new("data/pipeline-output-3.jpg")
        );
    }
}
