//! The browser's files, embedded in the binary: no CDN, no Node.js to build.

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path under `/assets/`.
    pub path: &'static str,
    /// Content type.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
}

/// The page (every view is a hash route of it).
pub const INDEX: &str = include_str!("../assets/index.html");

/// Every file under `/assets/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/uPlot.LICENSE"),
    },
];

/// The embedded file at `path` (under `/assets/`).
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Bytes of the first load of the overview: the page and every asset it references.
pub fn first_load_bytes() -> usize {
    INDEX.len()
        + ASSETS
            .iter()
            .filter(|a| !a.path.ends_with("LICENSE"))
            .map(|a| a.body.len())
            .sum::<usize>()
}
