//! The component registry: which components a step may name, their parameters
//! with types, ranges and defaults (DESIGN section 4), and the check that turns
//! a step's JSON parameters into the typed call the engine makes.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// How a parameter is typed and bounded.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamKind {
    Integer { minimum: i64, maximum: i64 },
    Number { minimum: f64, maximum: f64 },
    Boolean,
    String { max_length: usize },
    Enum { values: Vec<&'static str> },
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ParamSpec {
    pub name: &'static str,
    #[serde(flatten)]
    pub kind: ParamKind,
    #[schema(value_type = Object)]
    pub default: Value,
    pub description: &'static str,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Component {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    /// The gRPC method the engine calls.
    pub grpc_method: &'static str,
    pub parameters: Vec<ParamSpec>,
}

pub const RESIZE: &str = "resize";
pub const AI_DETECTION: &str = "ai_detection";
pub const FILTER: &str = "filter";

const FILTER_TYPES: [&str; 7] = [
    "blur",
    "sharpen",
    "brightness",
    "contrast",
    "saturation",
    "gaussian",
    "grayscale",
];

/// Every component a pipeline can use.
pub fn components() -> Vec<Component> {
    use ParamKind::*;
    use serde_json::json;
    vec![
        Component {
            name: RESIZE,
            version: "1.0.0",
            description: "Resize an image (JPEG, PNG, WebP); keep-aspect fits inside the box",
            grpc_method: "imageflow.v1.ResizeService/ResizeImage",
            parameters: vec![
                ParamSpec {
                    name: "width",
                    kind: Integer {
                        minimum: 0,
                        maximum: 16384,
                    },
                    default: json!(800),
                    description: "target width in pixels (0: derived from height)",
                },
                ParamSpec {
                    name: "height",
                    kind: Integer {
                        minimum: 0,
                        maximum: 16384,
                    },
                    default: json!(600),
                    description: "target height in pixels (0: derived from width)",
                },
                ParamSpec {
                    name: "maintain_aspect_ratio",
                    kind: Boolean,
                    default: json!(true),
                    description: "fit inside width x height instead of stretching to it",
                },
                ParamSpec {
                    name: "quality",
                    kind: Enum {
                        values: vec!["fast", "good", "best"],
                    },
                    default: json!("good"),
                    description: "fast: bilinear, JPEG 75; good: JPEG 85; best: Lanczos3, JPEG 95",
                },
            ],
        },
        Component {
            name: AI_DETECTION,
            version: "1.0.0",
            description: "Detect objects (YOLO, 80 COCO classes); optionally draw the boxes",
            grpc_method: "imageflow.v1.AIDetectionService/DetectObjects",
            parameters: vec![
                ParamSpec {
                    name: "model_name",
                    kind: String { max_length: 128 },
                    default: json!("yolo"),
                    description: "a model loaded by ai-detect-svc",
                },
                ParamSpec {
                    name: "confidence_threshold",
                    kind: Number {
                        minimum: 0.0,
                        maximum: 1.0,
                    },
                    default: json!(0.5),
                    description: "minimum class confidence of a detection",
                },
                ParamSpec {
                    name: "nms_threshold",
                    kind: Number {
                        minimum: 0.0,
                        maximum: 1.0,
                    },
                    default: json!(0.4),
                    description: "IoU above which overlapping boxes of one class are merged",
                },
                ParamSpec {
                    name: "draw_boxes",
                    kind: Boolean,
                    default: json!(true),
                    description: "output the image with boxes and labels drawn (else the input passes through)",
                },
            ],
        },
        Component {
            name: FILTER,
            version: "1.0.0",
            description: "Apply an image filter",
            grpc_method: "imageflow.v1.FilterService/ApplyFilter",
            parameters: vec![
                ParamSpec {
                    name: "filter_type",
                    kind: Enum {
                        values: FILTER_TYPES.to_vec(),
                    },
                    default: json!("gaussian"),
                    description: "which filter",
                },
                ParamSpec {
                    name: "intensity",
                    kind: Number {
                        minimum: 0.0,
                        maximum: 100.0,
                    },
                    default: json!(1.0),
                    description: "filter strength; the meaning and range per filter are in the README",
                },
            ],
        },
    ]
}

pub fn find(name: &str) -> Option<Component> {
    components().into_iter().find(|c| c.name == name)
}

/// The typed call of one step, after defaults and checks.
#[derive(Clone, Debug, PartialEq)]
pub enum StepCall {
    Resize {
        width: i32,
        height: i32,
        maintain_aspect_ratio: bool,
        quality: &'static str,
    },
    Detect {
        model_name: String,
        confidence_threshold: f32,
        nms_threshold: f32,
        draw_boxes: bool,
    },
    Filter {
        filter_type: &'static str,
        intensity: f32,
    },
}

impl StepCall {
    pub fn component(&self) -> &'static str {
        match self {
            Self::Resize { .. } => RESIZE,
            Self::Detect { .. } => AI_DETECTION,
            Self::Filter { .. } => FILTER,
        }
    }
}

/// Checks `parameters` against the component's schema and fills in defaults.
/// The message names the parameter and what is accepted.
pub fn resolve(component: &str, parameters: &BTreeMap<String, Value>) -> Result<StepCall, String> {
    let Some(spec) = find(component) else {
        return Err(format!(
            "unknown component {component:?}; known: {}",
            components()
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    for name in parameters.keys() {
        if !spec.parameters.iter().any(|p| p.name == name) {
            return Err(format!(
                "unknown parameter {name:?} for {component}; accepted: {}",
                spec.parameters
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let mut values = BTreeMap::new();
    for param in &spec.parameters {
        let value = parameters.get(param.name).unwrap_or(&param.default);
        values.insert(param.name, check(param, value)?);
    }
    let int = |n: &str| values[n].as_i64().unwrap_or_default() as i32;
    let num = |n: &str| values[n].as_f64().unwrap_or_default() as f32;
    let boolean = |n: &str| values[n].as_bool().unwrap_or_default();
    let choice = |n: &str, options: &[&'static str]| {
        let v = values[n].as_str().unwrap_or_default();
        options
            .iter()
            .copied()
            .find(|o| *o == v)
            .unwrap_or(options[0])
    };
    Ok(match component {
        RESIZE => {
            let (width, height) = (int("width"), int("height"));
            if width == 0 && height == 0 {
                return Err("width and height are both 0: give at least one".into());
            }
            StepCall::Resize {
                width,
                height,
                maintain_aspect_ratio: boolean("maintain_aspect_ratio"),
                quality: choice("quality", &["fast", "good", "best"]),
            }
        }
        AI_DETECTION => StepCall::Detect {
            model_name: values["model_name"].as_str().unwrap_or("yolo").to_string(),
            confidence_threshold: num("confidence_threshold"),
            nms_threshold: num("nms_threshold"),
            draw_boxes: boolean("draw_boxes"),
        },
        _ => StepCall::Filter {
            filter_type: choice("filter_type", &FILTER_TYPES),
            intensity: num("intensity"),
        },
    })
}

fn check(param: &ParamSpec, value: &Value) -> Result<Value, String> {
    let name = param.name;
    match &param.kind {
        ParamKind::Integer { minimum, maximum } => {
            // Accept 800.0 (JSON numbers from some clients) but not 800.5.
            let n = value
                .as_i64()
                .or_else(|| {
                    value
                        .as_f64()
                        .filter(|f| f.fract() == 0.0)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| format!("parameter {name:?} must be an integer, got {value}"))?;
            if n < *minimum || n > *maximum {
                return Err(format!(
                    "parameter {name:?} must be between {minimum} and {maximum}, got {n}"
                ));
            }
            Ok(Value::from(n))
        }
        ParamKind::Number { minimum, maximum } => {
            let n = value
                .as_f64()
                .ok_or_else(|| format!("parameter {name:?} must be a number, got {value}"))?;
            if !n.is_finite() || n < *minimum || n > *maximum {
                return Err(format!(
                    "parameter {name:?} must be between {minimum} and {maximum}, got {n}"
                ));
            }
            Ok(Value::from(n))
        }
        ParamKind::Boolean => value
            .as_bool()
            .map(Value::from)
            .ok_or_else(|| format!("parameter {name:?} must be true or false, got {value}")),
        ParamKind::String { max_length } => {
            let s = value
                .as_str()
                .ok_or_else(|| format!("parameter {name:?} must be a string, got {value}"))?;
            if s.is_empty() || s.len() > *max_length {
                return Err(format!(
                    "parameter {name:?} must be 1-{max_length} characters"
                ));
            }
            Ok(Value::from(s))
        }
        ParamKind::Enum { values } => {
            let s = value
                .as_str()
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| format!("parameter {name:?} must be a string, got {value}"))?;
            if values.contains(&s.as_str()) {
                Ok(Value::from(s))
            } else {
                Err(format!(
                    "parameter {name:?} must be one of {}, got {value}",
                    values.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_are_the_designs() {
        assert_eq!(
            resolve(RESIZE, &BTreeMap::new()).unwrap(),
            StepCall::Resize {
                width: 800,
                height: 600,
                maintain_aspect_ratio: true,
                quality: "good"
            }
        );
        assert_eq!(
            resolve(AI_DETECTION, &BTreeMap::new()).unwrap(),
            StepCall::Detect {
                model_name: "yolo".into(),
                confidence_threshold: 0.5,
                nms_threshold: 0.4,
                draw_boxes: true
            }
        );
        assert_eq!(
            resolve(FILTER, &BTreeMap::new()).unwrap(),
            StepCall::Filter {
                filter_type: "gaussian",
                intensity: 1.0
            }
        );
    }

    #[test]
    fn parameters_are_typed_and_bounded() {
        let call = resolve(
            FILTER,
            &params(json!({"filter_type": "SHARPEN", "intensity": 2})),
        )
        .unwrap();
        assert_eq!(
            call,
            StepCall::Filter {
                filter_type: "sharpen",
                intensity: 2.0
            }
        );
        for (component, bad, needle) in [
            (RESIZE, json!({"width": "800"}), "integer"),
            (RESIZE, json!({"width": 800.5}), "integer"),
            (RESIZE, json!({"width": -1}), "between"),
            (RESIZE, json!({"width": 0, "height": 0}), "both 0"),
            (RESIZE, json!({"colour": 1}), "unknown parameter"),
            (FILTER, json!({"filter_type": "sepia"}), "one of"),
            (
                AI_DETECTION,
                json!({"confidence_threshold": 1.5}),
                "between",
            ),
            (AI_DETECTION, json!({"draw_boxes": "yes"}), "true or false"),
        ] {
            let err = resolve(component, &params(bad.clone())).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(
            resolve("sepia", &BTreeMap::new())
                .unwrap_err()
                .contains("unknown component")
        );
    }
}
