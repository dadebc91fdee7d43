import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import type { FileEntry, WriteFileStreamRequestSchema } from "@nestbox/proto/hostagent";
import busboy from "busboy";
import type { Context } from "hono";
import { requireCaller } from "../../auth/middleware.js";
import { ApiError, badRequest } from "../../errors.js";
import type { AgentClient } from "../../services/sandbox-access.js";
import { newRouter } from "../app.js";
import { agentError } from "../command-common.js";
import type { AppDeps, AppEnv } from "../context.js";
import { errorResponses, SandboxIdParam } from "../schemas.js";

/**
 * Files in a sandbox. Uploads and downloads stream through in chunks of at most 64 KiB (the
 * agent's WriteFileStream / ReadFileStream), with backpressure both ways, so neither a file's
 * size nor the number of transfers at once shows up in the control plane's memory.
 */

const CHUNK = 64 * 1024;

export const PathSchema = z
  .string()
  .min(1)
  .max(4096)
  .regex(/^\/[^\0]*$/, "must be an absolute path (starting with /)");

const PathQuery = z.object({
  path: PathSchema.openapi({
    param: { name: "path", in: "query" },
    example: "/home/user/data.csv",
  }),
});

/** Uploads are written as this user (owner of the file and of parents it creates). */
const UploadQuery = PathQuery.extend({
  user: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, "must be a Linux user name")
    .default("user")
    .openapi({
      param: { name: "user", in: "query" },
      description: "Linux user the file is written as (default: user; root to write anywhere)",
    }),
});

export const FileEntrySchema = z
  .object({
    name: z.string(),
    path: z.string(),
    type: z
      .enum(["file", "dir", "symlink"])
      .openapi({ description: "for a symlink, size and mode describe its target" }),
    size: z.number().int(),
    mode: z.number().int().openapi({ description: "permission bits (& 0o7777)" }),
    permissions: z.string().openapi({ example: "-rw-r--r--" }),
    owner: z.string(),
    group: z.string(),
    modified_at: z.string().openapi({ format: "date-time" }),
    symlink_target: z.string().nullable(),
  })
  .openapi("FileEntry");

type FileEntryView = z.infer<typeof FileEntrySchema>;

export function fileEntryView(e: FileEntry): FileEntryView {
  return {
    name: e.name,
    path: e.path,
    type: e.type === "dir" || e.type === "symlink" ? e.type : "file",
    size: Number(e.size),
    mode: e.mode & 0o7777,
    permissions: e.permissions,
    owner: e.owner,
    group: e.group,
    modified_at: new Date(Number(e.modifiedAtUnix) * 1000).toISOString(),
    symlink_target: e.symlinkTarget || null,
  };
}

/** Splits a byte stream into pieces of at most CHUNK bytes, without copying. */
async function* rechunk(source: AsyncIterable<Uint8Array | string>): AsyncGenerator<Uint8Array> {
  for await (const piece of source) {
    const b = typeof piece === "string" ? Buffer.from(piece) : piece;
    for (let off = 0; off < b.length; off += CHUNK)
      yield b.subarray(off, Math.min(off + CHUNK, b.length));
  }
}

/** Streams `body` into `path` in the sandbox (the agent writes a temporary file, then renames). */
export async function uploadStream(
  agent: AgentClient,
  sandboxId: string,
  path: string,
  user: string,
  body: AsyncIterable<Uint8Array | string>,
  signal: AbortSignal,
): Promise<void> {
  async function* messages(): AsyncGenerator<
    MessageInitShape<typeof WriteFileStreamRequestSchema>
  > {
    yield { content: { case: "meta", value: { sandboxId, path, user } } };
    for await (const chunk of rechunk(body)) yield { content: { case: "chunk", value: chunk } };
  }
  await agent.writeFileStream(messages(), { signal });
}

/**
 * The request body as a Node stream: the server's IncomingMessage itself when served by
 * @hono/node-server (real socket backpressure), else the Fetch body.
 */
function requestBody(c: Context<AppEnv>): Readable {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming && typeof incoming.pipe === "function") return incoming;
  const web = c.req.raw.body;
  if (!web) return Readable.from([]);
  return Readable.fromWeb(web as unknown as NodeWebReadableStream<Uint8Array>);
}

/**
 * The first file part of a multipart/form-data body, as a stream; parts after it are skipped.
 * Rejects when the body has no file part or is not multipart.
 */
function firstFilePart(body: Readable, headers: Record<string, string>): Promise<Readable> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers, limits: { files: 1, fields: 32, fieldSize: 64 * 1024 } });
    } catch (err) {
      reject(badRequest(`body: ${err instanceof Error ? err.message : String(err)}`, "body"));
      return;
    }
    let file: Readable | undefined;
    bb.on("file", (_name, stream) => {
      file = stream;
      resolve(stream);
    });
    bb.on("error", (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err));
      if (file) file.destroy(e);
      else reject(badRequest(`body: malformed multipart data: ${e.message}`, "body"));
    });
    bb.on("close", () => {
      if (!file) reject(badRequest("body: the form has no file part", "body"));
    });
    body.on("error", (err) => bb.destroy(err));
    body.pipe(bb);
  });
}

function parse<T extends z.ZodTypeAny>(schema: T, value: unknown, where: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue?.path.join(".") || where;
  throw badRequest(`${field}: ${issue?.message ?? "invalid"}`, field);
}

const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});
const entryResponse = (description: string) => ({ description, ...json(FileEntrySchema) });
const fileErrors = {
  ...errorResponses,
  403: {
    description: "Permission denied in the sandbox",
    ...json(z.object({ error: z.object({ code: z.string(), message: z.string() }) })),
  },
} as const;

export function fileRoutes(deps: AppDeps): OpenAPIHono<AppEnv> {
  const r = newRouter();
  const auth = requireCaller(deps, { apiKey: true });
  r.use("/sandboxes/:id/files", auth);
  r.use("/sandboxes/:id/files/*", auth);

  const open = (c: Context<AppEnv>) => {
    const { id } = parse(SandboxIdParam, { id: c.req.param("id") }, "id");
    return deps.sandboxes.running(c.get("caller").teamId, id).then((s) => ({ id, agent: s.agent }));
  };
  const stat = async (agent: AgentClient, id: string, path: string) => {
    const { entry } = await agent.statPath({ sandboxId: id, path });
    if (!entry) throw new ApiError(502, "agent_error", "the agent returned no entry");
    return fileEntryView(entry);
  };

  // ── Upload (raw and multipart): plain routes, so no validator ever reads the body ──────────
  const uploadDoc = (method: "put" | "post", contentType: string, description: string) =>
    r.openAPIRegistry.registerPath({
      method,
      path: "/sandboxes/{id}/files",
      summary:
        method === "put" ? "Upload a file (raw body)" : "Upload a file (multipart/form-data)",
      description,
      tags: ["files"],
      security: [{ apiKey: [] }, { bearer: [] }],
      request: {
        params: SandboxIdParam,
        query: UploadQuery,
        body: {
          required: true,
          content: {
            [contentType]: {
              schema:
                contentType === "multipart/form-data"
                  ? z.object({ file: z.string().openapi({ format: "binary" }) })
                  : z.string().openapi({ format: "binary" }),
            },
          },
        },
      },
      responses: { 200: entryResponse("Written; the new file"), ...fileErrors },
    });
  uploadDoc(
    "put",
    "application/octet-stream",
    "Streams the body into `path` (parents are created, an existing file is replaced once the upload is complete). No size limit.",
  );
  uploadDoc(
    "post",
    "multipart/form-data",
    "Streams the form's first file part into `path` (other parts are ignored). No size limit.",
  );

  const upload = async (c: Context<AppEnv>, multipart: boolean) => {
    const { path, user } = parse(
      UploadQuery,
      { path: c.req.query("path"), user: c.req.query("user") },
      "path",
    );
    let body = requestBody(c);
    if (multipart) {
      const type = c.req.header("content-type") ?? "";
      if (!type.toLowerCase().startsWith("multipart/form-data"))
        throw badRequest(
          "content-type: must be multipart/form-data (or use PUT with a raw body)",
          "content-type",
        );
      // Authenticate and find the sandbox before reading anything.
      const { id, agent } = await open(c);
      body = await firstFilePart(body, { "content-type": type });
      return finishUpload(c, agent, id, path, user, body);
    }
    const { id, agent } = await open(c);
    return finishUpload(c, agent, id, path, user, body);
  };
  const finishUpload = async (
    c: Context<AppEnv>,
    agent: AgentClient,
    id: string,
    path: string,
    user: string,
    body: Readable,
  ) => {
    try {
      await uploadStream(agent, id, path, user, body, c.req.raw.signal);
      return c.json(await stat(agent, id, path), 200);
    } catch (err) {
      // Stop reading what the client still sends: the answer is already decided.
      body.destroy();
      throw agentError(err, `file ${path}`);
    }
  };
  r.put("/sandboxes/:id/files", (c) => upload(c, false));
  r.post("/sandboxes/:id/files", (c) => upload(c, true));

  // ── Download ──────────────────────────────────────────────────────────────────────────────
  r.openAPIRegistry.registerPath({
    method: "get",
    path: "/sandboxes/{id}/files",
    summary: "Download a file (streamed)",
    tags: ["files"],
    security: [{ apiKey: [] }, { bearer: [] }],
    request: { params: SandboxIdParam, query: PathQuery },
    responses: {
      200: {
        description:
          "The file's bytes (chunked). A failure after the first byte cuts the response short.",
        content: {
          "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) },
        },
      },
      ...fileErrors,
    },
  });
  r.get("/sandboxes/:id/files", async (c) => {
    const { path } = parse(PathQuery, { path: c.req.query("path") }, "path");
    const { id, agent } = await open(c);
    const abort = new AbortController();
    const signal = AbortSignal.any([abort.signal, c.req.raw.signal]);
    const it = agent.readFileStream({ sandboxId: id, path }, { signal })[Symbol.asyncIterator]();
    // The first chunk (or the error) decides the status before any header is sent.
    let first: IteratorResult<{ chunk: Uint8Array }>;
    try {
      first = await it.next();
    } catch (err) {
      throw agentError(err, `file ${path}`);
    }
    let pending: Uint8Array | undefined = first.done ? undefined : first.value.chunk;
    let done = first.done === true;
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          if (pending) {
            controller.enqueue(pending);
            pending = undefined;
            return;
          }
          if (done) {
            controller.close();
            return;
          }
          try {
            const n = await it.next();
            if (n.done) {
              done = true;
              controller.close();
            } else controller.enqueue(n.value.chunk);
          } catch (err) {
            if (!signal.aborted)
              console.warn(`[server] download of ${path} from ${id} failed mid-stream:`, err);
            controller.error(err);
          }
        },
        cancel() {
          abort.abort();
        },
      },
      { highWaterMark: 1 },
    );
    const name = path.split("/").pop() || "file";
    return new Response(stream, {
      status: 200,
      headers: {
        "content-type": "application/octet-stream",
        "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
        "cache-control": "no-store",
      },
    });
  });

  // ── Metadata and tree operations ─────────────────────────────────────────────────────────
  r.openapi(
    createRoute({
      method: "get",
      path: "/sandboxes/{id}/files/list",
      summary: "List a directory",
      tags: ["files"],
      request: {
        params: SandboxIdParam,
        query: PathQuery.extend({
          depth: z.coerce
            .number()
            .int()
            .min(1)
            .max(10)
            .default(1)
            .openapi({
              param: { name: "depth", in: "query" },
              description: "levels to descend (1 = the directory's own entries)",
            }),
        }),
      },
      responses: {
        200: { description: "Entries", ...json(z.object({ entries: z.array(FileEntrySchema) })) },
        ...fileErrors,
      },
    }),
    async (c) => {
      const { path, depth } = c.req.valid("query");
      const { id, agent } = await open(c);
      try {
        const { entries } = await agent.listDir({ sandboxId: id, path, depth });
        return c.json({ entries: entries.map(fileEntryView) }, 200);
      } catch (err) {
        throw agentError(err, `directory ${path}`);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/sandboxes/{id}/files/stat",
      summary: "Describe one path",
      tags: ["files"],
      request: { params: SandboxIdParam, query: PathQuery },
      responses: { 200: entryResponse("The entry"), ...fileErrors },
    }),
    async (c) => {
      const { path } = c.req.valid("query");
      const { id, agent } = await open(c);
      try {
        return c.json(await stat(agent, id, path), 200);
      } catch (err) {
        throw agentError(err, `path ${path}`);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/files/mkdir",
      summary: "Create a directory (and its parents)",
      tags: ["files"],
      request: {
        params: SandboxIdParam,
        body: { ...json(z.object({ path: PathSchema }).strict()), required: true },
      },
      responses: { 201: entryResponse("Created"), ...fileErrors },
    }),
    async (c) => {
      const { path } = c.req.valid("json");
      const { id, agent } = await open(c);
      try {
        const { entry } = await agent.makeDir({ sandboxId: id, path });
        if (!entry) throw new ApiError(502, "agent_error", "the agent returned no entry");
        return c.json(fileEntryView(entry), 201);
      } catch (err) {
        throw agentError(err, `directory ${path}`);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/sandboxes/{id}/files/move",
      summary: "Move or rename a file or directory",
      tags: ["files"],
      request: {
        params: SandboxIdParam,
        body: {
          ...json(z.object({ source: PathSchema, destination: PathSchema }).strict()),
          required: true,
        },
      },
      responses: { 200: entryResponse("Moved; the entry at its new path"), ...fileErrors },
    }),
    async (c) => {
      const { source, destination } = c.req.valid("json");
      const { id, agent } = await open(c);
      try {
        const { entry } = await agent.movePath({ sandboxId: id, source, destination });
        if (!entry) throw new ApiError(502, "agent_error", "the agent returned no entry");
        return c.json(fileEntryView(entry), 200);
      } catch (err) {
        throw agentError(err, `path ${source}`);
      }
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/sandboxes/{id}/files",
      summary: "Remove a file or a directory (recursively)",
      tags: ["files"],
      request: { params: SandboxIdParam, query: PathQuery },
      responses: { 204: { description: "Removed" }, ...fileErrors },
    }),
    async (c) => {
      const { path } = c.req.valid("query");
      const { id, agent } = await open(c);
      try {
        await agent.removePath({ sandboxId: id, path });
      } catch (err) {
        throw agentError(err, `path ${path}`);
      }
      return c.body(null, 204);
    },
  );

  return r;
}
