import type { Transport } from "./http.js";
import type { Template } from "./types.js";

/** `/v1/templates`: the team's templates and the platform's. */
export class Templates {
  constructor(private readonly t: Transport) {}

  async list(signal?: AbortSignal): Promise<Template[]> {
    const { templates } = await this.t.call(this.t.api.GET("/v1/templates", { signal }));
    return templates;
  }

  /** Turns a running or paused sandbox into the team template `name` (the sandbox is gone after). */
  snapshot(sandboxId: string, name: string, signal?: AbortSignal): Promise<Template> {
    return this.t.call(
      this.t.api.POST("/v1/templates", { body: { sandbox_id: sandboxId, name }, signal }),
    );
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.t.call(
      this.t.api.DELETE("/v1/templates/{name}", { params: { path: { name } }, signal }),
    );
  }
}
