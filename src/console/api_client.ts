/** Anything that answers a Request: the gateway app itself. */
export interface Fetcher {
  fetch(request: Request): Response | Promise<Response>;
}

/** A non-2xx answer of the API, with its stable error code. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export interface ApiClient {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
  /** The answer as is, for downloads; non-2xx still throws. */
  download(path: string): Promise<Response>;
}

async function failure(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const { error } = JSON.parse(text);
    return new ApiError(res.status, String(error.code), String(error.message));
  } catch {
    return new ApiError(res.status, "internal", text.slice(0, 200) || res.statusText);
  }
}

/**
 * Calls the gateway's own API in-process with the caller's JWT, so the
 * console gets exactly the API's RBAC, tenant scoping and audit trail. The
 * console request's id rides along, so its log line and the audit rows it
 * caused share one id.
 */
export function apiClient(
  app: () => Fetcher,
  origin: string,
  jwt?: string,
  requestId?: string,
): ApiClient {
  const send = async (method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = jwt ? { authorization: `Bearer ${jwt}` } : {};
    if (requestId) headers["x-request-id"] = requestId;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await app().fetch(
      new Request(new URL(path, origin), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    );
    if (!res.ok) throw await failure(res);
    return res;
  };
  return {
    get: async (path) => (await send("GET", path)).json(),
    post: async (path, body) => (await send("POST", path, body)).json(),
    download: (path) => send("GET", path),
  };
}
