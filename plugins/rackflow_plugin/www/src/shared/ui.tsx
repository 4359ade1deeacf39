// Shared building blocks of rackflow's pages, on Airflow's Chakra UI (so Airflow's theme applies).
import { Alert, Badge, Box, Flex, Heading, Link, Spinner, Table, Text } from "@chakra-ui/react";
import type { ReactNode } from "react";
import { Link as RouterLink } from "react-router-dom";

import { ApiError } from "./api";
import { formatUtcTime } from "./dates";
import { stateColor } from "./states";

/** A state as a coloured badge (`data-state` carries the raw value for tests and styling). */
export function StateBadge({ state, label }: { state: string | null | undefined; label?: string }) {
  return (
    <Badge colorPalette={stateColor(state)} variant="subtle" data-state={state ?? "unknown"}>
      {label ?? state ?? "unknown"}
    </Badge>
  );
}

/** A request's failure, with the API's own message; 403 says what the user may not do. */
export function ErrorAlert({ error, what }: { error: unknown; what?: string }) {
  if (!error) return null;
  const status = error instanceof ApiError ? error.status : undefined;
  const message = error instanceof Error ? error.message : String(error);
  const title =
    status === 403 ? `Not allowed${what ? ` to read ${what}` : ""}` : `Cannot load${what ? ` ${what}` : ""}`;
  return (
    <Alert.Root status={status === 403 ? "warning" : "error"} my={2} data-testid="error">
      <Alert.Indicator />
      <Alert.Content>
        <Alert.Title>
          {title}
          {status ? ` (${status})` : ""}
        </Alert.Title>
        <Alert.Description>{message}</Alert.Description>
      </Alert.Content>
    </Alert.Root>
  );
}

/** An outcome line after an action: success or the API's refusal. */
export function Notice({ kind, children }: { kind: "success" | "error" | "info"; children: ReactNode }) {
  return (
    <Alert.Root status={kind} my={2} data-testid={`notice-${kind}`}>
      <Alert.Indicator />
      <Alert.Description>{children}</Alert.Description>
    </Alert.Root>
  );
}

/** A link to another place in Airflow's UI (`to` from the UI's root, e.g. `/plugin/rackflow-jobs`). */
export function AppLink({ to, children }: { to: string; children: ReactNode }) {
  return (
    <Link asChild colorPalette="blue" color="colorPalette.fg">
      <RouterLink to={to}>{children}</RouterLink>
    </Link>
  );
}

/** A page's title with the "last updated" line of its live refresh. */
export function PageHeader({
  title,
  updatedAt,
  loading,
  children,
}: {
  title: string;
  updatedAt?: Date | null;
  loading?: boolean;
  children?: ReactNode;
}) {
  return (
    <Flex align="baseline" gap={4} wrap="wrap" mb={4}>
      <Heading size="xl">{title}</Heading>
      <Text fontSize="sm" color="fg.muted" data-testid="updated">
        {loading && !updatedAt ? "loading…" : updatedAt ? `updated ${formatUtcTime(updatedAt)}` : ""}
      </Text>
      {loading ? <Spinner size="xs" color="fg.muted" /> : null}
      <Box flex="1" />
      {children}
    </Flex>
  );
}

/** A titled block of a page; with `updatedAt`, it says when its data was last refreshed. */
export function Section({
  title,
  children,
  testId,
  updatedAt,
}: {
  title: ReactNode;
  children: ReactNode;
  testId?: string;
  updatedAt?: Date | null;
}) {
  return (
    <Box borderWidth="1px" borderColor="border" borderRadius="md" p={4} bg="bg.panel" data-testid={testId}>
      <Flex align="baseline" gap={3} mb={3}>
        <Heading size="md" flex="1">
          {title}
        </Heading>
        {updatedAt !== undefined ? (
          <Text fontSize="xs" color="fg.muted" data-testid="updated">
            {updatedAt ? `updated ${formatUtcTime(updatedAt)}` : "loading…"}
          </Text>
        ) : null}
      </Flex>
      {children}
    </Box>
  );
}

export interface Column<T> {
  /** Column id (also the `data-col` of its cells). */
  key: string;
  header: ReactNode;
  /** The cell's content; default: the row's field `key` as text. */
  render?: (row: T) => ReactNode;
  align?: "start" | "end";
}

/** One table look for every list on every page. */
export function DataTable<T>({
  columns,
  rows,
  rowKey,
  empty = "nothing to show",
  testId,
  rowProps,
}: {
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string;
  empty?: ReactNode;
  testId?: string;
  rowProps?: (row: T) => Record<string, string>;
}) {
  return (
    <Table.ScrollArea borderWidth="1px" borderColor="border" borderRadius="md">
      <Table.Root size="sm" striped data-testid={testId}>
        <Table.Header>
          <Table.Row>
            {columns.map((c) => (
              <Table.ColumnHeader key={c.key} textAlign={c.align ?? "start"}>
                {c.header}
              </Table.ColumnHeader>
            ))}
          </Table.Row>
        </Table.Header>
        <Table.Body>
          {rows.length === 0 ? (
            <Table.Row>
              <Table.Cell colSpan={columns.length} color="fg.muted">
                {empty}
              </Table.Cell>
            </Table.Row>
          ) : (
            rows.map((row) => (
              <Table.Row key={rowKey(row)} data-key={rowKey(row)} {...(rowProps ? rowProps(row) : {})}>
                {columns.map((c) => (
                  <Table.Cell key={c.key} data-col={c.key} textAlign={c.align ?? "start"}>
                    {c.render ? c.render(row) : String((row as Record<string, unknown>)[c.key] ?? "")}
                  </Table.Cell>
                ))}
              </Table.Row>
            ))
          )}
        </Table.Body>
      </Table.Root>
    </Table.ScrollArea>
  );
}
