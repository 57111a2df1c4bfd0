// Which suggested-action links the widget may render: the site's own paths or http(s) URLs only.

// "//host/x" and "/\host/x" are protocol-relative: browsers open another site, so they are refused.
const ALLOWED = /^(https?:\/\/[^\s]+|\/(?![/\\])[^\s]*)$/i;

/** The URL if it is safe to link to (absolute http(s) or a same-site path), else null. */
export function safeActionUrl(url) {
  if (typeof url !== 'string') return null;
  const trimmed = url.trim();
  return ALLOWED.test(trimmed) ? trimmed : null;
}
