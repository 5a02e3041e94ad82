//! Files: upload (raw body or multipart field `file`), metadata, download,
//! delete, list. The type is sniffed from the bytes and the header is read
//! (limits checked, so a decompression bomb is refused at upload), never
//! trusted from the client's Content-Type.

use axum::{
    Extension, Json,
    body::Body,
    extract::{FromRequest, Multipart, Path, Query, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use imageflow_imaging::{Limits, probe, sniff_format};
use imageflow_storage::{BucketName, ObjectKey};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Actor, AppState};
use crate::{
    db::{FileRecord, Timestamp},
    error::{ApiError, ApiResult, ErrorBody},
};

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// 1-500, default 50.
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    pub files: Vec<FileRecord>,
}

/// Upload an image (JPEG, PNG or WebP).
#[utoipa::path(
    post, path = "/v1/files", tag = "files",
    request_body(content = Vec<u8>, description = "the image bytes, or multipart/form-data with a `file` field", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = FileRecord),
        (status = 400, description = "corrupt, truncated or oversized image", body = ErrorBody),
        (status = 413, description = "over MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "not JPEG, PNG or WebP", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    request: Request,
) -> ApiResult<Response> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let limit = state.max_upload_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "upload is over the limit of {limit} bytes (MAX_UPLOAD_BYTES)"
        ))
    };
    let (data, filename) = if is_multipart {
        let mut multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
            })?;
        let mut found = None;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
                Err(e) => {
                    return Err(ApiError::bad_request(format!(
                        "malformed multipart body: {}",
                        e.body_text()
                    )));
                }
            };
            if field.name() == Some("file") {
                let filename = field.file_name().map(str::to_string);
                let data = field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large()
                    } else {
                        ApiError::bad_request(format!(
                            "malformed multipart body: {}",
                            e.body_text()
                        ))
                    }
                })?;
                found = Some((data, filename));
                break;
            }
        }
        found.ok_or_else(|| ApiError::bad_request("multipart body has no field named \"file\""))?
    } else {
        let data = Bytes::from_request(request, &state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
            }
        })?;
        (data, None)
    };
    if data.is_empty() {
        return Err(ApiError::bad_request("the upload is empty"));
    }
    let Some(format) = sniff_format(&data) else {
        return Err(ApiError::UnsupportedMediaType(
            "the upload is not a JPEG, PNG or WebP image (checked from its bytes)".into(),
        ));
    };
    let limits = Limits {
        max_input_bytes: limit.max(1),
        ..Limits::default()
    };
    let info = probe(&data, &limits).map_err(|e| ApiError::bad_request(e.to_string()))?;

    let file_id = uuid::Uuid::new_v4().to_string();
    let key = ObjectKey::parse(&format!("uploads/{file_id}.{}", format.extension()))?;
    let bucket: BucketName = state.store.default_bucket().clone();
    let meta = Box::pin(state.store.put(&bucket, &key, data, format.mime())).await?;
    let record = FileRecord {
        file_id,
        bucket: bucket.as_str().to_string(),
        object_key: key.into_string(),
        content_type: format.mime().to_string(),
        size_bytes: meta.size as i64,
        width: i64::from(info.width),
        height: i64::from(info.height),
        filename: filename.map(|f| sanitize_filename(&f)),
        execution_id: None,
        created_at: Timestamp::now().to_rfc3339(),
    };
    state.db.insert_file(&record).await?;
    tracing::info!(actor = %actor.0, file_id = %record.file_id, size_bytes = record.size_bytes, "file uploaded");
    let location = format!("/v1/files/{}", record.file_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(record),
    )
        .into_response())
}

/// Keeps a client's file name printable and short (it is shown and sent back
/// in Content-Disposition, never used as a path).
fn sanitize_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(200)
        .collect()
}

/// List files, newest first.
#[utoipa::path(get, path = "/v1/files", tag = "files", params(ListQuery),
    responses((status = 200, body = FileList)))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<FileList>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1-500"));
    }
    Ok(Json(FileList {
        files: state.db.list_files(limit).await?,
    }))
}

async fn find(state: &AppState, file_id: &str) -> ApiResult<FileRecord> {
    state
        .db
        .get_file(file_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no file with id {file_id:?}")))
}

/// A file's metadata.
#[utoipa::path(get, path = "/v1/files/{file_id}", tag = "files",
    params(("file_id" = String, Path)),
    responses((status = 200, body = FileRecord), (status = 404, body = ErrorBody)))]
pub async fn metadata(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> ApiResult<Json<FileRecord>> {
    Ok(Json(find(&state, &file_id).await?))
}

/// A file's bytes.
#[utoipa::path(get, path = "/v1/files/{file_id}/download", tag = "files",
    params(("file_id" = String, Path)),
    responses((status = 200, description = "the image", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    let file = find(&state, &file_id).await?;
    let bucket = BucketName::parse(&file.bucket)?;
    let key = ObjectKey::parse(&file.object_key)?;
    let object = Box::pin(state.store.get(&bucket, &key)).await?;
    let name = file.filename.clone().unwrap_or_else(|| {
        file.object_key
            .rsplit('/')
            .next()
            .unwrap_or("image")
            .to_string()
    });
    Response::builder()
        .header(header::CONTENT_TYPE, &file.content_type)
        .header(header::CONTENT_LENGTH, object.data.len())
        .header(
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{}\"", sanitize_filename(&name)),
        )
        .body(Body::from(object.data))
        .map_err(|e| ApiError::Internal(format!("download response: {e}")))
}

/// Delete a file and its object.
#[utoipa::path(delete, path = "/v1/files/{file_id}", tag = "files",
    params(("file_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(file_id): Path<String>,
) -> ApiResult<StatusCode> {
    let file = find(&state, &file_id).await?;
    let bucket = BucketName::parse(&file.bucket)?;
    let key = ObjectKey::parse(&file.object_key)?;
    Box::pin(state.store.delete(&bucket, &key)).await?;
    state.db.delete_file(&file_id).await?;
    tracing::info!(actor = %actor.0, file_id = %file_id, "file deleted");
    Ok(StatusCode::NO_CONTENT)
}
