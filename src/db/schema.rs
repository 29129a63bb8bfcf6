// The api_web tables (migrations/ and sql/api_web.sql create them).

diesel::table! {
    image (image_id) {
        image_id -> Varchar,
        image_name -> Varchar,
        image_size -> Unsigned<Bigint>,
        os_type -> Varchar,
        describe -> Varchar,
        status -> Varchar,
        error_message -> Nullable<Varchar>,
        snapshot_name -> Nullable<Varchar>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
        project_id -> Varchar,
        visibility -> Varchar,
        progress -> Nullable<Unsigned<Tinyint>>,
        source_snapshot_id -> Nullable<Varchar>,
        source_volume_id -> Nullable<Varchar>,
        sha256 -> Nullable<Varchar>,
    }
}

diesel::table! {
    instance (instance_id) {
        instance_id -> Varchar,
        instance_name -> Varchar,
        status -> Varchar,
        ip -> Nullable<Varchar>,
        host_ip -> Varchar,
        host_id -> Varchar,
        cpu -> Unsigned<Integer>,
        memory -> Unsigned<Bigint>,
        image_id -> Varchar,
        root_size -> Nullable<Unsigned<Bigint>>,
        describe -> Varchar,
        progress -> Unsigned<Tinyint>,
        progress_step -> Varchar,
        error_message -> Nullable<Varchar>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
        project_id -> Varchar,
    }
}

diesel::table! {
    volume (volume_id) {
        volume_id -> Varchar,
        volume_name -> Varchar,
        volume_size -> Unsigned<Bigint>,
        status -> Varchar,
        instance_id -> Nullable<Varchar>,
        is_root -> Bool,
        target_dev -> Nullable<Varchar>,
        describe -> Varchar,
        error_message -> Nullable<Varchar>,
        attach_time -> Nullable<Unsigned<Bigint>>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
        project_id -> Varchar,
        delete_with_instance -> Bool,
    }
}

diesel::table! {
    network_interface (network_interface_id) {
        network_interface_id -> Varchar,
        network_interface_name -> Varchar,
        mac -> Char,
        ip -> Nullable<Varchar>,
        bridge -> Varchar,
        status -> Varchar,
        instance_id -> Nullable<Varchar>,
        describe -> Varchar,
        error_message -> Nullable<Varchar>,
        attach_time -> Nullable<Unsigned<Bigint>>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
        project_id -> Varchar,
        delete_with_instance -> Bool,
    }
}

diesel::table! {
    operation (operation_id) {
        operation_id -> Varchar,
        kind -> Varchar,
        resource_id -> Varchar,
        status -> Varchar,
        step -> Varchar,
        state -> Text,
        owner -> Nullable<Varchar>,
        lease_until_ms -> Nullable<Unsigned<Bigint>>,
        error_message -> Nullable<Varchar>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    deployment (id) {
        id -> Unsigned<Tinyint>,
        deployment_id -> Char,
        create_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    project (project_id) {
        project_id -> Varchar,
        project_name -> Varchar,
        create_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    api_key (key_id) {
        key_id -> Varchar,
        key_name -> Varchar,
        key_hash -> Char,
        role -> Varchar,
        project_id -> Varchar,
        expire_time -> Nullable<Unsigned<Bigint>>,
        revoke_time -> Nullable<Unsigned<Bigint>>,
        create_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    api_user (user_id) {
        user_id -> Varchar,
        user_name -> Varchar,
        password_hash -> Varchar,
        role -> Varchar,
        project_id -> Varchar,
        disable_time -> Nullable<Unsigned<Bigint>>,
        create_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    quota (project_id) {
        project_id -> Varchar,
        instances -> Nullable<Unsigned<Bigint>>,
        vcpus -> Nullable<Unsigned<Bigint>>,
        memory_mib -> Nullable<Unsigned<Bigint>>,
        volumes -> Nullable<Unsigned<Bigint>>,
        volume_gib -> Nullable<Unsigned<Bigint>>,
        network_interfaces -> Nullable<Unsigned<Bigint>>,
        images -> Nullable<Unsigned<Bigint>>,
        update_time -> Unsigned<Bigint>,
    }
}

diesel::table! {
    audit_log (audit_id) {
        audit_id -> Unsigned<Bigint>,
        time_ms -> Unsigned<Bigint>,
        request_id -> Varchar,
        credential -> Nullable<Varchar>,
        user_name -> Nullable<Varchar>,
        project_id -> Nullable<Varchar>,
        action -> Varchar,
        resource_id -> Nullable<Varchar>,
        outcome -> Varchar,
        error_code -> Nullable<Varchar>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    image,
    instance,
    volume,
    network_interface,
    operation,
    deployment,
    project,
    api_key,
    api_user,
    quota,
    audit_log,
    snapshot,
    snapshot_volume,
    host
);

diesel::table! {
    snapshot (snapshot_id) {
        snapshot_id -> Varchar,
        snapshot_name -> Varchar,
        instance_id -> Nullable<Varchar>,
        volume_id -> Nullable<Varchar>,
        status -> Varchar,
        suspended_ms -> Nullable<Unsigned<Bigint>>,
        error_message -> Nullable<Varchar>,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
        project_id -> Varchar,
    }
}

diesel::table! {
    snapshot_volume (snapshot_id, volume_id) {
        snapshot_id -> Varchar,
        volume_id -> Varchar,
        volume_size -> Unsigned<Bigint>,
        is_root -> Bool,
    }
}

diesel::table! {
    host (host_id) {
        host_id -> Varchar,
        host_name -> Varchar,
        uri -> Varchar,
        address -> Varchar,
        host_uuid -> Nullable<Varchar>,
        status -> Varchar,
        online -> Bool,
        last_contact -> Nullable<Unsigned<Bigint>>,
        error_message -> Nullable<Varchar>,
        arch -> Varchar,
        cpu_model -> Varchar,
        cpu_sockets -> Unsigned<Integer>,
        cpu_cores -> Unsigned<Integer>,
        cpu_threads -> Unsigned<Integer>,
        cpus -> Unsigned<Integer>,
        memory_mib -> Unsigned<Bigint>,
        memory_free_mib -> Unsigned<Bigint>,
        libvirt_version -> Varchar,
        qemu_version -> Varchar,
        machine_types -> Varchar,
        firmware -> Varchar,
        kvm -> Bool,
        cpu_capacity -> Nullable<Unsigned<Integer>>,
        memory_capacity_mib -> Nullable<Unsigned<Bigint>>,
        vcpus_used -> Unsigned<Integer>,
        memory_used_mib -> Unsigned<Bigint>,
        bridges -> Varchar,
        tags -> Varchar,
        create_time -> Unsigned<Bigint>,
        update_time -> Unsigned<Bigint>,
    }
}
