import { redirect } from "@sveltejs/kit";

// The admin section opens on its hosts page.
export function load(): never {
  redirect(307, "/admin/hosts");
}
