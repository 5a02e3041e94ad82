//! `imageflowctl process`: one image through resize and filters, by bytes.

use std::{path::PathBuf, time::Duration, time::Instant};

use anyhow::{Context, bail};
use clap::Args;
use imageflow_pipeline::{
    registry::{FilterType, ResizeQuality},
    wire::UnknownName,
};
use imageflow_proto::v1::{
    self, FilterRequest, ImageBytes, ResizeRequest, filter_request,
    filter_service_client::FilterServiceClient, resize_request,
    resize_service_client::ResizeServiceClient,
};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Input image (JPEG, PNG or WebP).
    input: PathBuf,
    /// Where to write the result.
    #[arg(short, long)]
    output: PathBuf,
    /// Resize into WIDTHxHEIGHT (aspect ratio kept unless --exact).
    #[arg(long, value_parser = parse_size)]
    resize: Option<(i32, i32)>,
    /// Resize to exactly the given size, ignoring the aspect ratio.
    #[arg(long)]
    exact: bool,
    /// fast, good or best.
    #[arg(long, default_value = "good")]
    quality: ResizeQuality,
    /// NAME[:INTENSITY], e.g. gaussian:2 or brightness:1.2; repeat for a chain.
    #[arg(long = "filter")]
    filters: Vec<String>,
    #[arg(
        long,
        env = "RESIZE_GRPC_ENDPOINT",
        default_value = "http://127.0.0.1:9091"
    )]
    resize_endpoint: String,
    #[arg(
        long,
        env = "FILTER_GRPC_ENDPOINT",
        default_value = "http://127.0.0.1:9092"
    )]
    filter_endpoint: String,
}

fn parse_size(text: &str) -> Result<(i32, i32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let parse = |s: &str| {
        s.parse::<i32>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    Ok((parse(w)?, parse(h)?))
}

/// A filter by its pipeline name, in any case ("Gaussian" is gaussian).
pub fn filter_type(name: &str) -> Result<FilterType, UnknownName> {
    name.to_ascii_lowercase().parse()
}

pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    imageflow_proto::transport::tuned(
        Endpoint::from_shared(endpoint.to_string())
            .with_context(|| format!("{endpoint:?} is not a URL"))?,
    )
    .connect_timeout(Duration::from_secs(3))
    .timeout(Duration::from_secs(60))
    .connect()
    .await
    .with_context(|| format!("cannot reach {endpoint}"))
}

pub async fn run(args: ProcessArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut data =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    if args.resize.is_none() && args.filters.is_empty() {
        bail!("nothing to do: give --resize and/or --filter");
    }
    if let Some((width, height)) = args.resize {
        let mut client = ResizeServiceClient::new(connect(&args.resize_endpoint).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let response = client
            .resize_image(ResizeRequest {
                input: Some(resize_request::Input::InputBytes(ImageBytes {
                    data,
                    ..Default::default()
                })),
                target_width: width,
                target_height: height,
                maintain_aspect_ratio: !args.exact,
                quality: v1::ResizeQuality::from(args.quality) as i32,
                execution_id: String::new(),
                input_index: None,
            })
            .await
            .context("resize")?
            .into_inner();
        let result = response.result.context("resize: empty result")?;
        eprintln!(
            "resize: {} in {:.1} ms",
            result.message,
            result.processing_time_seconds * 1000.0
        );
        data = result.output_data;
    }
    if !args.filters.is_empty() {
        let mut client = FilterServiceClient::new(connect(&args.filter_endpoint).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        for spec in &args.filters {
            let (name, intensity) = match spec.split_once(':') {
                Some((name, value)) => (
                    name,
                    value
                        .parse::<f32>()
                        .with_context(|| format!("--filter {spec:?}: bad intensity"))?,
                ),
                None => (spec.as_str(), 0.0),
            };
            let response = client
                .apply_filter(FilterRequest {
                    input: Some(filter_request::Input::InputBytes(ImageBytes {
                        data,
                        ..Default::default()
                    })),
                    filter_type: v1::FilterType::from(filter_type(name)?) as i32,
                    intensity,
                    parameters: Default::default(),
                    execution_id: String::new(),
                    input_index: None,
                })
                .await
                .with_context(|| format!("filter {name}"))?
                .into_inner();
            let result = response.result.context("filter: empty result")?;
            eprintln!(
                "filter: {} in {:.1} ms",
                result.message,
                result.processing_time_seconds * 1000.0
            );
            data = result.output_data;
        }
    }
    std::fs::write(&args.output, &data)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} bytes) in {:.1} ms end to end",
        args.output.display(),
        data.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_filters_parse() {
        assert_eq!(parse_size("800x600"), Ok((800, 600)));
        assert!(parse_size("800").is_err());
        assert!(parse_size("ax1").is_err());
        assert_eq!(filter_type("Gaussian").unwrap(), FilterType::Gaussian);
        assert_eq!(filter_type("grayscale").unwrap(), FilterType::Grayscale);
        let err = filter_type("sepia").unwrap_err().to_string();
        assert!(
            err.contains("\"sepia\"") && err.contains("gaussian"),
            "{err}"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        process: ProcessArgs,
    }

    #[test]
    fn quality_is_checked_when_parsing_arguments() {
        use clap::Parser;
        let parse = |quality: &str| {
            Cli::try_parse_from(["process", "in.jpg", "-o", "out.jpg", "--quality", quality])
        };
        assert_eq!(parse("best").unwrap().process.quality, ResizeQuality::Best);
        let err = parse("ultra").unwrap_err().to_string();
        assert!(err.contains("allowed: fast, good, best"), "{err}");
        let default = Cli::try_parse_from(["process", "in.jpg", "-o", "out.jpg"]).unwrap();
        assert_eq!(default.process.quality, ResizeQuality::Good);
    }
}
