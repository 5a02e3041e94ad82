//! The component registry: which components a step may name, their parameters
//! with types, ranges and defaults, and the check that turns
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

wire_enum! {
    /// The `quality` of a resize step.
    pub enum ResizeQuality ("resize quality") {
        /// Bilinear, JPEG 75.
        Fast = "fast",
        /// JPEG 85.
        Good = "good",
        /// Lanczos3, JPEG 95.
        Best = "best",
    }
}

wire_enum! {
    /// The `filter_type` of a filter step.
    pub enum FilterType ("filter type") {
        Blur = "blur",
        Sharpen = "sharpen",
        Brightness = "brightness",
        Contrast = "contrast",
        Saturation = "saturation",
        Gaussian = "gaussian",
        Grayscale = "grayscale",
    }
}

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
                        values: ResizeQuality::NAMES.to_vec(),
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
                        values: FilterType::NAMES.to_vec(),
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
        quality: ResizeQuality,
    },
    Detect {
        model_name: String,
        confidence_threshold: f32,
        nms_threshold: f32,
        draw_boxes: bool,
    },
    Filter {
        filter_type: FilterType,
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

/// Why a step's component or parameters were refused. The messages name the
/// parameter and what is accepted; API clients and tests read them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown component {name:?}; known: {}", .known.join(", "))]
    UnknownComponent {
        name: String,
        known: Vec<&'static str>,
    },
    #[error("unknown parameter {name:?} for {component}; accepted: {}", .accepted.join(", "))]
    UnknownParameter {
        component: &'static str,
        name: String,
        accepted: Vec<&'static str>,
    },
    #[error("width and height are both 0: give at least one")]
    NoSize,
    #[error("parameter {name:?} must be an integer, got {got}")]
    NotInteger { name: &'static str, got: Value },
    #[error("parameter {name:?} must be between {minimum} and {maximum}, got {got}")]
    IntegerOutOfRange {
        name: &'static str,
        minimum: i64,
        maximum: i64,
        got: i64,
    },
    #[error("parameter {name:?} must be a number, got {got}")]
    NotNumber { name: &'static str, got: Value },
    #[error("parameter {name:?} must be between {minimum} and {maximum}, got {got}")]
    NumberOutOfRange {
        name: &'static str,
        minimum: f64,
        maximum: f64,
        got: f64,
    },
    #[error("parameter {name:?} must be true or false, got {got}")]
    NotBoolean { name: &'static str, got: Value },
    #[error("parameter {name:?} must be a string, got {got}")]
    NotString { name: &'static str, got: Value },
    #[error("parameter {name:?} must be 1-{max_length} characters")]
    BadLength {
        name: &'static str,
        max_length: usize,
    },
    #[error("parameter {name:?} must be one of {}, got {got}", .allowed.join(", "))]
    NotOneOf {
        name: &'static str,
        allowed: Vec<&'static str>,
        got: Value,
    },
}

/// Checks `parameters` against the component's schema and fills in defaults.
pub fn resolve(
    component: &str,
    parameters: &BTreeMap<String, Value>,
) -> Result<StepCall, ResolveError> {
    let unknown_component = || ResolveError::UnknownComponent {
        name: component.to_string(),
        known: components().iter().map(|c| c.name).collect(),
    };
    let spec = find(component).ok_or_else(unknown_component)?;
    for name in parameters.keys() {
        if !spec.parameters.iter().any(|p| p.name == name) {
            return Err(ResolveError::UnknownParameter {
                component: spec.name,
                name: name.clone(),
                accepted: spec.parameters.iter().map(|p| p.name).collect(),
            });
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
    Ok(match spec.name {
        RESIZE => {
            let (width, height) = (int("width"), int("height"));
            if width == 0 && height == 0 {
                return Err(ResolveError::NoSize);
            }
            StepCall::Resize {
                width,
                height,
                maintain_aspect_ratio: boolean("maintain_aspect_ratio"),
                quality: choice(&values, "quality", ResizeQuality::NAMES)?,
            }
        }
        AI_DETECTION => StepCall::Detect {
            model_name: values["model_name"].as_str().unwrap_or("yolo").to_string(),
            confidence_threshold: num("confidence_threshold"),
            nms_threshold: num("nms_threshold"),
            draw_boxes: boolean("draw_boxes"),
        },
        FILTER => StepCall::Filter {
            filter_type: choice(&values, "filter_type", FilterType::NAMES)?,
            intensity: num("intensity"),
        },
        // A component in the list without a call of its own.
        _ => return Err(unknown_component()),
    })
}

/// The typed value of an enum parameter that [`check`] has already accepted;
/// a name the schema lists but the type lacks is refused the same way, never
/// replaced by another value.
fn choice<T: std::str::FromStr>(
    values: &BTreeMap<&'static str, Value>,
    name: &'static str,
    allowed: &[&'static str],
) -> Result<T, ResolveError> {
    let value = &values[name];
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ResolveError::NotOneOf {
            name,
            allowed: allowed.to_vec(),
            got: value.clone(),
        })
}

fn check(param: &ParamSpec, value: &Value) -> Result<Value, ResolveError> {
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
                .ok_or_else(|| ResolveError::NotInteger {
                    name,
                    got: value.clone(),
                })?;
            if n < *minimum || n > *maximum {
                return Err(ResolveError::IntegerOutOfRange {
                    name,
                    minimum: *minimum,
                    maximum: *maximum,
                    got: n,
                });
            }
            Ok(Value::from(n))
        }
        ParamKind::Number { minimum, maximum } => {
            let n = value.as_f64().ok_or_else(|| ResolveError::NotNumber {
                name,
                got: value.clone(),
            })?;
            if !n.is_finite() || n < *minimum || n > *maximum {
                return Err(ResolveError::NumberOutOfRange {
                    name,
                    minimum: *minimum,
                    maximum: *maximum,
                    got: n,
                });
            }
            Ok(Value::from(n))
        }
        ParamKind::Boolean => {
            value
                .as_bool()
                .map(Value::from)
                .ok_or_else(|| ResolveError::NotBoolean {
                    name,
                    got: value.clone(),
                })
        }
        ParamKind::String { max_length } => {
            let s = value.as_str().ok_or_else(|| ResolveError::NotString {
                name,
                got: value.clone(),
            })?;
            if s.is_empty() || s.len() > *max_length {
                return Err(ResolveError::BadLength {
                    name,
                    max_length: *max_length,
                });
            }
            Ok(Value::from(s))
        }
        ParamKind::Enum { values } => {
            // Names are matched case-insensitively ("SHARPEN" is sharpen).
            let s = value.as_str().map(str::to_ascii_lowercase).ok_or_else(|| {
                ResolveError::NotString {
                    name,
                    got: value.clone(),
                }
            })?;
            if values.contains(&s.as_str()) {
                Ok(Value::from(s))
            } else {
                Err(ResolveError::NotOneOf {
                    name,
                    allowed: values.clone(),
                    got: value.clone(),
                })
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
                quality: ResizeQuality::Good
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
                filter_type: FilterType::Gaussian,
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
                filter_type: FilterType::Sharpen,
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
            let err = resolve(component, &params(bad.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(
            resolve("sepia", &BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("unknown component")
        );
    }

    /// Clients and tests match on these texts: the typed errors keep the
    /// wording the string errors had.
    #[test]
    fn error_messages_keep_their_wording() {
        for (component, bad, message) in [
            (
                RESIZE,
                json!({"colour": 1}),
                "unknown parameter \"colour\" for resize; accepted: width, height, maintain_aspect_ratio, quality",
            ),
            (
                RESIZE,
                json!({"width": 800.5}),
                "parameter \"width\" must be an integer, got 800.5",
            ),
            (
                RESIZE,
                json!({"height": 20000}),
                "parameter \"height\" must be between 0 and 16384, got 20000",
            ),
            (
                RESIZE,
                json!({"width": 0, "height": 0}),
                "width and height are both 0: give at least one",
            ),
            (
                RESIZE,
                json!({"quality": "ultra"}),
                "parameter \"quality\" must be one of fast, good, best, got \"ultra\"",
            ),
            (
                FILTER,
                json!({"filter_type": "sepia"}),
                "parameter \"filter_type\" must be one of blur, sharpen, brightness, contrast, saturation, gaussian, grayscale, got \"sepia\"",
            ),
            (
                FILTER,
                json!({"filter_type": 3}),
                "parameter \"filter_type\" must be a string, got 3",
            ),
            (
                FILTER,
                json!({"intensity": 100.5}),
                "parameter \"intensity\" must be between 0 and 100, got 100.5",
            ),
            (
                AI_DETECTION,
                json!({"nms_threshold": "high"}),
                "parameter \"nms_threshold\" must be a number, got \"high\"",
            ),
            (
                AI_DETECTION,
                json!({"draw_boxes": 1}),
                "parameter \"draw_boxes\" must be true or false, got 1",
            ),
            (
                AI_DETECTION,
                json!({"model_name": ""}),
                "parameter \"model_name\" must be 1-128 characters",
            ),
        ] {
            let err = resolve(component, &params(bad)).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert_eq!(
            resolve("sepia", &BTreeMap::new()).unwrap_err().to_string(),
            "unknown component \"sepia\"; known: resize, ai_detection, filter"
        );
    }

    #[test]
    fn enum_parameters_become_their_enum_values() {
        for quality in ResizeQuality::ALL {
            let call = resolve(RESIZE, &params(json!({"quality": quality.as_str()}))).unwrap();
            let StepCall::Resize { quality: got, .. } = call else {
                panic!("{call:?}");
            };
            assert_eq!(got, *quality);
        }
        for filter in FilterType::ALL {
            let upper = filter.as_str().to_ascii_uppercase();
            let call = resolve(FILTER, &params(json!({"filter_type": upper}))).unwrap();
            assert_eq!(
                call,
                StepCall::Filter {
                    filter_type: *filter,
                    intensity: 1.0
                }
            );
        }
    }

    /// The names are the JSON wire values of today's API and UI, and each one
    /// goes through serde and `FromStr` and comes back unchanged.
    #[test]
    fn wire_names_round_trip() {
        assert_eq!(ResizeQuality::NAMES, ["fast", "good", "best"]);
        assert_eq!(
            FilterType::NAMES,
            [
                "blur",
                "sharpen",
                "brightness",
                "contrast",
                "saturation",
                "gaussian",
                "grayscale"
            ]
        );
        for quality in ResizeQuality::ALL {
            let json = serde_json::to_value(quality).unwrap();
            assert_eq!(json, json!(quality.as_str()));
            assert_eq!(
                serde_json::from_value::<ResizeQuality>(json).unwrap(),
                *quality
            );
            assert_eq!(quality.as_str().parse::<ResizeQuality>(), Ok(*quality));
            assert_eq!(quality.to_string(), quality.as_str());
        }
        for filter in FilterType::ALL {
            let json = serde_json::to_value(filter).unwrap();
            assert_eq!(json, json!(filter.as_str()));
            assert_eq!(serde_json::from_value::<FilterType>(json).unwrap(), *filter);
            assert_eq!(filter.as_str().parse::<FilterType>(), Ok(*filter));
            assert_eq!(filter.to_string(), filter.as_str());
        }
        // The registry offers exactly these names.
        for (component, parameter, names) in [
            (RESIZE, "quality", ResizeQuality::NAMES),
            (FILTER, "filter_type", FilterType::NAMES),
        ] {
            let spec = find(component).unwrap();
            let param = spec
                .parameters
                .iter()
                .find(|p| p.name == parameter)
                .unwrap();
            let ParamKind::Enum { values } = &param.kind else {
                panic!("{parameter} is not an enum");
            };
            assert_eq!(values, names);
        }
    }

    #[test]
    fn unknown_names_are_refused_naming_the_allowed_ones() {
        let err = "ultra".parse::<ResizeQuality>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown resize quality \"ultra\"; allowed: fast, good, best"
        );
        let err = "sepia".parse::<FilterType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown filter type \"sepia\"; allowed: blur, sharpen, brightness, contrast, saturation, gaussian, grayscale"
        );
        // Exact names only: the wire and the database carry lowercase.
        assert!("Good".parse::<ResizeQuality>().is_err());
        assert!(serde_json::from_value::<FilterType>(json!("sepia")).is_err());
    }
}
