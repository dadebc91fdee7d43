/**
 * The dashboard's pages, in sidebar order. A new page is a folder under src/routes/(app)/ plus
 * one entry here; `roles` hides an entry from members (the page itself still guards its API).
 */
export interface NavEntry {
  href: string;
  label: string;
  /** An SVG path (24×24 viewBox, stroked). */
  icon: string;
  roles?: readonly ("owner" | "admin" | "member")[];
}

export const NAV: readonly NavEntry[] = [
  {
    href: "/sandboxes",
    label: "Sandboxes",
    icon: "M4 6h16M4 12h16M4 18h16",
  },
  {
    href: "/keys",
    label: "API keys",
    icon: "M15 7a4 4 0 1 1-3.9 4.9L4 19v-3h3v-3h3l1.1-1.1A4 4 0 0 1 15 7z",
  },
];
