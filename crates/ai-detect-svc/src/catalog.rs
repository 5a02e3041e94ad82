//! The models in `MODEL_DIR`: every `*.onnx` file, served under its file stem,
//! with its class names and input size read from the ONNX file itself (the
//! `names` and `imgsz` metadata Ultralytics exports write), or its class names
//! from a `{stem}.names` file (one per line) beside it.
//!
//! The metadata is read with a few hand-declared protobuf messages: prost skips
//! every field not declared, so the weights are never decoded and this works
//! without ONNX Runtime (the Triton backend needs it too).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// The name `model_name` may use for the default model.
pub const DEFAULT_ALIAS: &str = "yolo";

/// The model served by default when present.
pub const PREFERRED_DEFAULT: &str = "yolo11n";

/// What the service knows about one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The file stem, e.g. `yolo11n`.
    pub name: String,
    pub path: PathBuf,
    /// E.g. `ultralytics 8.3.250`, or the ONNX model_version.
    pub version: String,
    pub class_names: Vec<String>,
    pub input_name: String,
    pub output_name: String,
    pub input_width: u32,
    pub input_height: u32,
}

impl ModelSpec {
    /// Values one image takes in the input tensor.
    pub fn image_len(&self) -> usize {
        3 * self.input_width as usize * self.input_height as usize
    }

    pub fn class_name(&self, id: usize) -> String {
        self.class_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("class_{id}"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "MODEL_DIR: cannot read {dir}: {source} (run scripts/setup.sh, or point MODEL_DIR at a directory of .onnx models)"
    )]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "MODEL_DIR: {dir} holds no .onnx model (run scripts/setup.sh to fetch YOLO11n, or drop a YOLOv8/YOLO11 .onnx export there)"
    )]
    Empty { dir: PathBuf },
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("DEFAULT_MODEL: {name:?} is not among the models in MODEL_DIR ({available})")]
    UnknownDefault { name: String, available: String },
}

/// The models of one directory and which one is the default.
#[derive(Clone, Debug)]
pub struct Catalog {
    models: BTreeMap<String, ModelSpec>,
    default: String,
}

impl Catalog {
    /// Reads every `*.onnx` in `dir`.
    pub fn load(dir: &Path, default: Option<&str>) -> Result<Self, CatalogError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut models = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|source| CatalogError::Dir {
                    dir: dir.to_path_buf(),
                    source,
                })?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
                continue;
            }
            let spec = read_spec(&path)?;
            models.insert(spec.name.clone(), spec);
        }
        if models.is_empty() {
            return Err(CatalogError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        let default = match default {
            Some(name) if models.contains_key(name) => name.to_string(),
            Some(name) => {
                return Err(CatalogError::UnknownDefault {
                    name: name.into(),
                    available: models.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
            None if models.contains_key(PREFERRED_DEFAULT) => PREFERRED_DEFAULT.to_string(),
            None => models.keys().next().cloned().unwrap_or_default(),
        };
        Ok(Self { models, default })
    }

    /// The model a request asks for: "" and `yolo` are the default one.
    pub fn resolve(&self, requested: &str) -> Option<&ModelSpec> {
        let name = requested.trim();
        if name.is_empty() || name == DEFAULT_ALIAS {
            self.models.get(&self.default)
        } else {
            self.models.get(name)
        }
    }

    pub fn default_model(&self) -> &str {
        &self.default
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.values()
    }
}

// The few parts of onnx.proto this reads; every other field is skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(int64, tag = "5")]
    model_version: i64,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

fn read_spec(path: &Path) -> Result<ModelSpec, CatalogError> {
    let fail = |message: String| CatalogError::Model {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let model = <ModelProto as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| fail(format!("not an ONNX model: {e}")))?;
    let meta = |key: &str| {
        model
            .metadata_props
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| fail("the file name is not UTF-8".into()))?
        .to_string();
    let class_names = match meta("names") {
        Some(raw) => parse_names(raw).map_err(|e| fail(format!("metadata 'names': {e}")))?,
        None => {
            let sidecar = path.with_extension("names");
            let text = std::fs::read_to_string(&sidecar).map_err(|e| {
                fail(format!(
                    "has no 'names' metadata and {} cannot be read ({e}); write one class name per line there",
                    sidecar.display()
                ))
            })?;
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        }
    };
    if class_names.is_empty() {
        return Err(fail("lists no class names".into()));
    }
    let (input_height, input_width) = match meta("imgsz") {
        Some(raw) => parse_imgsz(raw)
            .ok_or_else(|| fail(format!("metadata 'imgsz' {raw:?} is not [h, w]")))?,
        None => (640, 640),
    };
    let graph = model.graph.unwrap_or_default();
    let first = |values: &[ValueInfoProto], what: &str| {
        values
            .first()
            .map(|v| v.name.clone())
            .ok_or_else(|| fail(format!("the graph has no {what}")))
    };
    let version = match (meta("version"), model.producer_name.as_str()) {
        (Some(v), "") => v.to_string(),
        (Some(v), producer) => format!("{} {v}", producer.to_ascii_lowercase()),
        (None, _) => model.model_version.to_string(),
    };
    Ok(ModelSpec {
        name,
        path: path.to_path_buf(),
        version,
        class_names,
        input_name: first(&graph.input, "input")?,
        output_name: first(&graph.output, "output")?,
        input_width,
        input_height,
    })
}

/// Parses the Python dict literal Ultralytics writes, `{0: 'person', 1: "o'clock"}`,
/// into names ordered by id (ids must be 0..n without gaps).
pub fn parse_names(raw: &str) -> Result<Vec<String>, String> {
    let body = raw
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("not a {id: 'name'} dict")?;
    let mut names = BTreeMap::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (id, after) = rest.split_once(':').ok_or("an entry has no ':'")?;
        let id: usize = id
            .trim()
            .parse()
            .map_err(|_| format!("{:?} is not a class id", id.trim()))?;
        let after = after.trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or("a name is not quoted")?;
        let mut name = String::new();
        let mut chars = after[1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        name.push(escaped);
                    }
                }
                c if c == quote => {
                    end = Some(i + 2);
                    break;
                }
                c => name.push(c),
            }
        }
        let end = end.ok_or("a name is not closed")?;
        names.insert(id, name);
        rest = after[end..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    if names.keys().enumerate().any(|(i, id)| i != *id) {
        return Err("class ids are not 0..n".into());
    }
    Ok(names.into_values().collect())
}

/// `[640, 640]` or `640` to (height, width).
fn parse_imgsz(raw: &str) -> Option<(u32, u32)> {
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    let sides: Vec<u32> = inner
        .split(',')
        .map(|s| s.trim().parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    match sides.as_slice() {
        [side] if *side > 0 => Some((*side, *side)),
        [h, w] if *h > 0 && *w > 0 => Some((*h, *w)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_python_dict_ultralytics_writes() {
        let names =
            parse_names("{0: 'person', 1: 'traffic light', 2: \"o'clock\", 3: 'a\\'b'}").unwrap();
        assert_eq!(names, vec!["person", "traffic light", "o'clock", "a'b"]);
        assert_eq!(parse_names("{}").unwrap(), Vec::<String>::new());
        for bad in ["[0, 1]", "{0: person}", "{1: 'a'}", "{0: 'a"] {
            assert!(parse_names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn imgsz_forms() {
        assert_eq!(parse_imgsz("[640, 640]"), Some((640, 640)));
        assert_eq!(parse_imgsz("[384, 640]"), Some((384, 640)));
        assert_eq!(parse_imgsz("320"), Some((320, 320)));
        assert_eq!(parse_imgsz("[0, 1]"), None);
        assert_eq!(parse_imgsz("big"), None);
    }

    fn write_model(dir: &Path, stem: &str, names: Option<&str>) {
        let model = ModelProto {
            producer_name: "test".into(),
            model_version: 3,
            graph: Some(GraphProto {
                input: vec![ValueInfoProto {
                    name: "images".into(),
                }],
                output: vec![ValueInfoProto {
                    name: "output0".into(),
                }],
            }),
            metadata_props: names
                .map(|n| {
                    vec![StringStringEntryProto {
                        key: "names".into(),
                        value: n.into(),
                    }]
                })
                .unwrap_or_default(),
        };
        std::fs::write(
            dir.join(format!("{stem}.onnx")),
            prost::Message::encode_to_vec(&model),
        )
        .unwrap();
    }

    #[test]
    fn a_directory_of_models_with_names_in_metadata_or_beside() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), "yolo11n", Some("{0: 'person', 1: 'cat'}"));
        write_model(dir.path(), "custom", None);
        std::fs::write(dir.path().join("custom.names"), "widget\n\ngadget\n").unwrap();
        std::fs::write(dir.path().join("README.txt"), "not a model").unwrap();
        let catalog = Catalog::load(dir.path(), None).unwrap();
        assert_eq!(catalog.names(), vec!["custom", "yolo11n"]);
        assert_eq!(catalog.default_model(), "yolo11n");
        let yolo = catalog.resolve("yolo").unwrap();
        assert_eq!(yolo.class_names, vec!["person", "cat"]);
        assert_eq!(
            (yolo.input_name.as_str(), yolo.output_name.as_str()),
            ("images", "output0")
        );
        assert_eq!((yolo.input_width, yolo.input_height), (640, 640));
        assert_eq!(catalog.resolve("").unwrap().name, "yolo11n");
        assert_eq!(
            catalog.resolve("custom").unwrap().class_names,
            vec!["widget", "gadget"]
        );
        assert!(catalog.resolve("yolov5").is_none());
        assert_eq!(
            Catalog::load(dir.path(), Some("custom"))
                .unwrap()
                .default_model(),
            "custom"
        );
        assert!(matches!(
            Catalog::load(dir.path(), Some("nope")),
            Err(CatalogError::UnknownDefault { .. })
        ));
    }

    #[test]
    fn missing_or_empty_directories_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = Catalog::load(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
        let err = Catalog::load(&dir.path().join("absent"), None).unwrap_err();
        assert!(err.to_string().contains("MODEL_DIR"), "{err}");
        write_model(dir.path(), "nameless", None);
        let err = Catalog::load(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("nameless.names"), "{err}");
    }
}
