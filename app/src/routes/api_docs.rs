//! The interactive API documentation at `/api/docs`: Swagger UI rendering
//! `/api/openapi.json`, with "Try it out" against this server.
//!
//! Swagger UI 5.35.0 (`swagger-ui-dist` from npm, Apache-2.0: its `LICENSE`,
//! `NOTICE` and the bundle's third-party notices are kept beside it in
//! `app/assets/swagger-ui/`) and the page's own files in `app/assets/api-docs/`
//! are compiled into the binary: nothing is fetched at build or run time.
//!
//! Every answer carries a Content-Security-Policy allowing scripts, styles,
//! fonts and requests from this origin only (no inline script or style, no
//! frame around the page), plus `nosniff` and `no-referrer`. The token a
//! reader enters stays in the page's memory (see `api-docs.js`). Assets are
//! served with an `ETag` (a hash of their content, computed once) and
//! revalidated on each visit, so an upgraded binary never mixes old and new
//! files; the Compress middleware around this scope gzips them.

use std::sync::LazyLock;

use actix_web::http::header::{self, ContentType, EntityTag, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What the page may load and do: only this origin, nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the page.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/api-docs/index.html"),
};

const ASSETS: [Asset; 4] = [
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/swagger-ui/swagger-ui.css"),
    },
    Asset {
        name: "api-docs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/api-docs/api-docs.js"),
    },
    Asset {
        name: "api-docs.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/api-docs/api-docs.css"),
    },
];

/// The `ETag` of each asset (and the page, last), hashed on first use.
static ETAGS: LazyLock<Vec<EntityTag>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain(std::iter::once(&INDEX))
        // Weak: the Compress middleware may send the same file gzipped.
        .map(|asset| EntityTag::new_weak(hex::encode(&Sha256::digest(asset.body)[..16])))
        .collect()
});

/// `GET /api/docs`: the page.
pub async fn page(req: HttpRequest) -> HttpResponse {
    serve(&req, &INDEX, &ETAGS[ASSETS.len()])
}

/// `GET /api/docs/{file}`: one of the page's assets, or 404.
pub async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let index = ASSETS
        .iter()
        .position(|asset| asset.name == file.as_str())
        .ok_or(ApiError::NotFound("no such route"))?;
    Ok(serve(&req, &ASSETS[index], &ETAGS[index]))
}

fn serve(req: &HttpRequest, asset: &Asset, etag: &EntityTag) -> HttpResponse {
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .filter_map(|tag| tag.trim().parse::<EntityTag>().ok())
                .any(|tag| tag.weak_eq(etag))
        });
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(header::ETag(etag.clone()))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
    with_security_headers(&mut response);
    if fresh {
        response.finish()
    } else {
        response
            .content_type(ContentType(
                asset.content_type.parse().expect("a valid media type"),
            ))
            .body(asset.body)
    }
}

/// The headers every answer of the docs scope carries.
fn with_security_headers(response: &mut actix_web::HttpResponseBuilder) {
    response
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_this_module_serves() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        let referenced: Vec<&str> = page
            .split(['"', '\''])
            .filter_map(|part| part.strip_prefix("/api/docs/"))
            .collect();
        assert_eq!(referenced.len(), ASSETS.len(), "{referenced:?}");
        for name in referenced {
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "{name} is not served"
            );
        }
        assert!(!page.contains("<style") && !page.contains("style="));
        assert!(!page.contains("<script>"), "no inline script");
    }
}
